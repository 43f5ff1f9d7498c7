/*
** actor-db's KV-backed VFS in C: the fast path of vfs/file.py.
**
** CONTRACT
**   Byte-compatible with the pure-Python VFS (vfs/file.py) on the KV: same keys, same
**   meta, same commit batches, same redo protocol, because every KV call is still made
**   by the shared Python logic (native/file.py subclasses vfs.file.KVFile). This file
**   keeps the per-file hot state in C and serves xRead/xWrite/xTruncate/xFileSize/
**   xLock/... with no Python call when the data is local:
**     read:  dirty buffer -> staged? -> zero tail -> preload chunks -> chunk cache
**     write: into the dirty buffer (whole CHUNK_SIZE chunks)
**   It enters Python (cffi extern "Python", GIL taken only there) only for KV work:
**     kvn_py_fetch   ONE batched read of the missing chunks (+ read-ahead)
**     kvn_py_sync    the commit (one atomic batch or vfs/redo.py), at xSync
**     kvn_py_spill   staging when the dirty buffer outgrows max_dirty_bytes
**     kvn_py_ensure_ready / kvn_py_open / kvn_py_close / kvn_py_truncate (rare) /
**     kvn_py_file_control (PRAGMA guard; commit of changes made after the sync)
**   The read-ahead and LRU rules are those of vfs/file.py line for line, so both VFSes
**   make the same KV calls (round trips) for the same workload.
**
**   Errors: a Python callback never lets an exception escape into C. It stores the
**   apsw exception it built (naming the KV cause) with kvn_set_error() and returns an
**   SQLITE_IOERR_* code; kvn_leave() then leaves that exception set on the calling
**   thread exactly as apsw's own Python VFS does, so apsw raises it to the user.
**
**   Loading: this module is also an SQLite loadable extension (entry point
**   sqlite3_actordbnative_init). Loaded into apsw's statically linked SQLite, it binds
**   sqlite3_api to THAT library and registers the VFS "actor-db-native" there. It must
**   not be loaded into a second SQLite library in the same process.
**
** LEFT OUT
**   Journal, WAL and shm files (journal_mode=MEMORY, locking_mode=EXCLUSIVE), mmap,
**   cross-process locking (the KV driver's fencing does that). Non-actor files (temp
**   files) are delegated whole to the default VFS.
*/
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>

#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1

#define KVN_CHUNK 4096                 /* bytes per chunk (vfs.keys.CHUNK_SIZE) */
#define KVN_VFS_NAME "actor-db-native"
#define KVN_PREFIX "actor-db-native:"  /* file names bound by native/registry.py */
#define KVN_EXPORT __attribute__((visibility("default")))

/* --------------------------------------------------------------- allocation */
/* Every block this file allocates is counted, so a test can prove that thousands of
** open/close cycles return to the same count (no leak in C). */
static long long kvn_live_blocks = 0;

static void *kvn_malloc(size_t n) {
  void *p = malloc(n);
  if (p) __atomic_add_fetch(&kvn_live_blocks, 1, __ATOMIC_RELAXED);
  return p;
}
static void *kvn_calloc(size_t n, size_t sz) {
  void *p = calloc(n, sz);
  if (p) __atomic_add_fetch(&kvn_live_blocks, 1, __ATOMIC_RELAXED);
  return p;
}
static void kvn_free(void *p) {
  if (p) {
    __atomic_sub_fetch(&kvn_live_blocks, 1, __ATOMIC_RELAXED);
    free(p);
  }
}
static long long kvn_live_allocations(void) {
  return __atomic_load_n(&kvn_live_blocks, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------- prefetching */
/* Ask the CPU to start loading each address's cache line, without waiting for any
** (actor_db.runtime.prefetch: an actor's hot objects, at the start of its call, so that
** their cache misses overlap instead of stalling one after another). A prefetch is a
** hint: it never faults, so a stale or freed address costs a wasted load, nothing else. */
static void kvn_prefetch(const uint64_t *lines) {
  /* lines[0] is the count (one array: its length is on the line already being read). */
  for (uint64_t i = 1; i <= lines[0]; i++) __builtin_prefetch((const void *)(uintptr_t)lines[i], 0, 3);
}

static const unsigned char kvn_zero[KVN_CHUNK];  /* a chunk known to be all zeros */

/* ------------------------------------------------------- uint32 -> ptr map */
/* Open addressing, linear probing, backward-shift deletion. val == NULL: empty slot. */
typedef struct { uint32_t key; void *val; } kvn_slot;
typedef struct {
  kvn_slot *slots;  /* cap slots, cap a power of two (or 0 before first insert) */
  size_t cap;
  size_t count;     /* occupied slots; count * 4 <= cap * 3 */
} kvn_map;

static size_t kvn_ideal(uint32_t key, size_t mask) {
  return (size_t)(((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

static void *kvn_map_get(const kvn_map *m, uint32_t key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = kvn_ideal(key, mask);; i = (i + 1) & mask) {
    if (!m->slots[i].val) return NULL;
    if (m->slots[i].key == key) return m->slots[i].val;
  }
}

static int kvn_map_grow(kvn_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  kvn_slot *ns = kvn_calloc(ncap, sizeof(kvn_slot));
  if (!ns) return SQLITE_NOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slots[i].val) continue;
    size_t j = kvn_ideal(m->slots[i].key, ncap - 1);
    while (ns[j].val) j = (j + 1) & (ncap - 1);
    ns[j] = m->slots[i];
  }
  kvn_free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return SQLITE_OK;
}

/* Insert or replace; *old receives the replaced value (or NULL). */
static int kvn_map_put(kvn_map *m, uint32_t key, void *val, void **old) {
  assert(val != NULL);
  *old = NULL;
  if ((m->count + 1) * 4 > m->cap * 3 && kvn_map_grow(m) != SQLITE_OK) return SQLITE_NOMEM;
  size_t mask = m->cap - 1;
  size_t i = kvn_ideal(key, mask);
  while (m->slots[i].val && m->slots[i].key != key) i = (i + 1) & mask;
  if (m->slots[i].val) *old = m->slots[i].val;
  else m->count++;
  m->slots[i].key = key;
  m->slots[i].val = val;
  return SQLITE_OK;
}

/* Remove key; returns its value (or NULL when absent). */
static void *kvn_map_del(kvn_map *m, uint32_t key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  size_t i = kvn_ideal(key, mask);
  while (m->slots[i].val && m->slots[i].key != key) i = (i + 1) & mask;
  void *val = m->slots[i].val;
  if (!val) return NULL;
  /* Backward shift: pull later entries of the probe run into the hole. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!m->slots[j].val) break;
    size_t k = kvn_ideal(m->slots[j].key, mask);
    int between = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
    if (between) continue;  /* entry j sits at or after its ideal slot: leave it */
    m->slots[i] = m->slots[j];
    i = j;
  }
  m->slots[i].val = NULL;
  m->count--;
  return val;
}

/* Keys into out (at most n); returns how many. */
static size_t kvn_map_keys(const kvn_map *m, uint32_t *out, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < m->cap && k < n; i++)
    if (m->slots[i].val) out[k++] = m->slots[i].key;
  return k;
}

/* Free every value with kvn_free (unless values are sentinels) and the slots. */
static void kvn_map_clear(kvn_map *m, int free_values) {
  if (free_values)
    for (size_t i = 0; i < m->cap; i++) kvn_free(m->slots[i].val);
  kvn_free(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}

/* --------------------------------------------- the process-wide chunk cache */
/* ONE LRU of committed chunks for every file of this VFS in the process, bounded by a
** byte budget (kvn_cache_configure; vfs/chunk_cache.py sets it), so a busy actor can
** keep its whole database warm while idle actors hold nothing. Each file owns a view
** (kvn_lru): its own index -> node map, its own recency list and an optional per-file
** cap in chunks; every node is also on the global recency list. Lookups and puts make
** an entry most recent in both lists; a membership test does not. Inserting past the
** file's cap evicts the file's least recent entry; past the global budget, the
** process's least recent entry, whichever file owns it. A file's entries are freed
** when it closes (they may be stale for the next open: another process may write).
**
** Locking: kvn_cache_mu guards the global list AND every file's cache map and list
** (an eviction touches another file's map). Lock order: a file's mu, then
** kvn_cache_mu. Chunk bytes are copied out while kvn_cache_mu is held: a node may be
** evicted by another thread as soon as it is released. */
typedef struct kvn_lru kvn_lru;
typedef struct kvn_node kvn_node;
struct kvn_node {
  kvn_node *gprev, *gnext;      /* global list; gprev: more recent */
  kvn_node *fprev, *fnext;      /* the owning file's list; fprev: more recent */
  kvn_lru *owner;
  uint32_t index;
  unsigned char data[KVN_CHUNK];
};
struct kvn_lru {
  kvn_map map;                  /* index -> kvn_node* */
  kvn_node *head, *tail;        /* this file's entries; head: most recent */
  size_t cap;                   /* per-file cap in chunks; 0: the file does not cache */
};

static pthread_mutex_t kvn_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static kvn_node *kvn_ghead, *kvn_gtail;
static size_t kvn_gcount;                          /* chunks held, all files */
static size_t kvn_gcap = (64u << 20) / KVN_CHUNK;  /* budget in chunks (until configured) */
static long long kvn_ghits, kvn_gmisses, kvn_gevictions;

static void kvn_lru_unlink(kvn_node *n) {
  kvn_lru *c = n->owner;
  if (n->fprev) n->fprev->fnext = n->fnext; else c->head = n->fnext;
  if (n->fnext) n->fnext->fprev = n->fprev; else c->tail = n->fprev;
  if (n->gprev) n->gprev->gnext = n->gnext; else kvn_ghead = n->gnext;
  if (n->gnext) n->gnext->gprev = n->gprev; else kvn_gtail = n->gprev;
  n->fprev = n->fnext = n->gprev = n->gnext = NULL;
}
static void kvn_lru_push(kvn_node *n) {
  kvn_lru *c = n->owner;
  n->fprev = NULL;
  n->fnext = c->head;
  if (c->head) c->head->fprev = n;
  c->head = n;
  if (!c->tail) c->tail = n;
  n->gprev = NULL;
  n->gnext = kvn_ghead;
  if (kvn_ghead) kvn_ghead->gprev = n;
  kvn_ghead = n;
  if (!kvn_gtail) kvn_gtail = n;
}
/* Free node n (caller holds kvn_cache_mu). */
static void kvn_lru_drop(kvn_node *n) {
  kvn_map_del(&n->owner->map, n->index);
  kvn_lru_unlink(n);
  kvn_gcount--;
  kvn_free(n);
}
/* Caller holds kvn_cache_mu. */
static kvn_node *kvn_lru_get(kvn_lru *c, uint32_t index) {
  if (!c->cap) return NULL;
  kvn_node *n = kvn_map_get(&c->map, index);
  if (n) {
    if (kvn_ghead != n || c->head != n) { kvn_lru_unlink(n); kvn_lru_push(n); }
    kvn_ghits++;
  } else {
    kvn_gmisses++;
  }
  return n;
}
/* Caller holds kvn_cache_mu. */
static void kvn_lru_del(kvn_lru *c, uint32_t index) {
  kvn_node *n = kvn_map_get(&c->map, index);
  if (n) kvn_lru_drop(n);
}
/* Caller holds kvn_cache_mu. */
static void kvn_lru_evict_to_budget(void) {
  while (kvn_gcount > kvn_gcap && kvn_gtail) {
    kvn_lru_drop(kvn_gtail);
    kvn_gevictions++;
  }
}
/* Caller holds kvn_cache_mu. */
static int kvn_lru_put(kvn_lru *c, uint32_t index, const unsigned char *data, size_t len) {
  if (!c->cap || !kvn_gcap) return SQLITE_OK;
  if (len > KVN_CHUNK) len = KVN_CHUNK;
  kvn_node *n = kvn_map_get(&c->map, index);
  if (n) {
    kvn_lru_unlink(n);
  } else {
    void *old;
    n = kvn_malloc(sizeof(kvn_node));
    if (!n) return SQLITE_NOMEM;
    n->index = index;
    n->owner = c;
    n->fprev = n->fnext = n->gprev = n->gnext = NULL;
    if (kvn_map_put(&c->map, index, n, &old) != SQLITE_OK) { kvn_free(n); return SQLITE_NOMEM; }
    kvn_gcount++;
  }
  memcpy(n->data, data, len);
  if (len < KVN_CHUNK) memset(n->data + len, 0, KVN_CHUNK - len);
  kvn_lru_push(n);
  while (c->map.count > c->cap && c->tail) {
    kvn_lru_drop(c->tail);
    kvn_gevictions++;
  }
  kvn_lru_evict_to_budget();
  return SQLITE_OK;
}
/* Caller holds kvn_cache_mu. */
static void kvn_lru_clear(kvn_lru *c) {
  while (c->head) kvn_lru_drop(c->head);
  kvn_map_clear(&c->map, 0);
}
/* Copy [off, off+len) of cached chunk `index` into dst; 0 when not cached. */
static int kvn_cache_copy(kvn_lru *c, uint32_t index, unsigned char *dst, size_t off, size_t len) {
  if (!c->cap) return 0;
  pthread_mutex_lock(&kvn_cache_mu);
  kvn_node *n = kvn_lru_get(c, index);
  if (n) memcpy(dst, n->data + off, len);
  pthread_mutex_unlock(&kvn_cache_mu);
  return n != NULL;
}
static int kvn_cache_contains(kvn_lru *c, uint32_t index) {
  if (!c->cap) return 0;
  pthread_mutex_lock(&kvn_cache_mu);
  int r = kvn_map_get(&c->map, index) != NULL;
  pthread_mutex_unlock(&kvn_cache_mu);
  return r;
}

/* Process-wide settings and counters (vfs/chunk_cache.py). */
static void kvn_cache_configure(long long budget_chunks) {
  pthread_mutex_lock(&kvn_cache_mu);
  kvn_gcap = budget_chunks < 0 ? 0 : (size_t)budget_chunks;
  kvn_lru_evict_to_budget();
  pthread_mutex_unlock(&kvn_cache_mu);
}
/* out: chunks held, budget in chunks, hits, misses, evictions. */
static void kvn_cache_totals(long long *out) {
  pthread_mutex_lock(&kvn_cache_mu);
  out[0] = (long long)kvn_gcount;
  out[1] = (long long)kvn_gcap;
  out[2] = kvn_ghits;
  out[3] = kvn_gmisses;
  out[4] = kvn_gevictions;
  pthread_mutex_unlock(&kvn_cache_mu);
}

/* ----------------------------------------------- preload chunks and coverage */
/* The chunk-key part of the Python PreloadMap, mirrored (native/file.py keeps it in
** sync through PreloadMap listeners). Three answers as in vfs/preload.py: a value,
** ABSENT (covered, no value: zeros), NOT_LOADED (ask the KV). Intervals are half-open
** chunk-index ranges [lo, hi), sorted and disjoint; hi may be 2^32. */
typedef struct { uint64_t lo, hi; } kvn_span;
typedef struct {
  kvn_map values;   /* index -> malloc'd KVN_CHUNK bytes */
  kvn_span *spans;
  size_t nspans, capspans;
} kvn_preload;

enum { KVN_NOT_LOADED = 0, KVN_ABSENT = 1, KVN_FOUND = 2 };

static int kvn_preload_state(const kvn_preload *p, uint32_t index, const unsigned char **val) {
  *val = kvn_map_get(&p->values, index);
  if (*val) return KVN_FOUND;
  for (size_t i = 0; i < p->nspans; i++)
    if (p->spans[i].lo <= index && index < p->spans[i].hi) return KVN_ABSENT;
  return KVN_NOT_LOADED;
}

static int kvn_span_cmp(const void *a, const void *b) {
  const kvn_span *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Add [lo, hi) to the coverage (merging). */
static int kvn_preload_cover_span(kvn_preload *p, uint64_t lo, uint64_t hi) {
  if (lo >= hi) return SQLITE_OK;
  if (p->nspans == p->capspans) {
    size_t ncap = p->capspans ? p->capspans * 2 : 8;
    kvn_span *ns = kvn_malloc(ncap * sizeof(kvn_span));
    if (!ns) return SQLITE_NOMEM;
    if (p->nspans) memcpy(ns, p->spans, p->nspans * sizeof(kvn_span));
    kvn_free(p->spans);
    p->spans = ns;
    p->capspans = ncap;
  }
  p->spans[p->nspans].lo = lo;
  p->spans[p->nspans].hi = hi;
  p->nspans++;
  qsort(p->spans, p->nspans, sizeof(kvn_span), kvn_span_cmp);
  size_t w = 0;
  for (size_t r = 1; r < p->nspans; r++) {
    if (p->spans[r].lo <= p->spans[w].hi) {
      if (p->spans[r].hi > p->spans[w].hi) p->spans[w].hi = p->spans[r].hi;
    } else {
      p->spans[++w] = p->spans[r];
    }
  }
  p->nspans = w + 1;
  return SQLITE_OK;
}

/* Forget values and coverage in [lo, hi): they become NOT_LOADED. */
static void kvn_preload_forget(kvn_preload *p, uint64_t lo, uint64_t hi) {
  if (p->values.count) {
    uint32_t *keys = kvn_malloc(p->values.count * sizeof(uint32_t));
    if (keys) {
      size_t n = kvn_map_keys(&p->values, keys, p->values.count);
      for (size_t i = 0; i < n; i++)
        if (keys[i] >= lo && keys[i] < hi) kvn_free(kvn_map_del(&p->values, keys[i]));
      kvn_free(keys);
    } else {
      kvn_map_clear(&p->values, 1);  /* out of memory: forgetting more is always safe */
    }
  }
  if (!p->nspans) return;
  /* At most one span is split in two, so nspans + 1 entries suffice. */
  kvn_span *out = kvn_malloc((p->nspans + 1) * sizeof(kvn_span));
  if (!out) {  /* out of memory: forgetting all coverage is always safe */
    kvn_free(p->spans);
    p->spans = NULL;
    p->nspans = p->capspans = 0;
    return;
  }
  size_t w = 0;
  for (size_t r = 0; r < p->nspans; r++) {
    kvn_span s = p->spans[r];
    if (s.hi <= lo || s.lo >= hi) { out[w++] = s; continue; }
    if (s.lo < lo) { out[w].lo = s.lo; out[w].hi = lo; w++; }
    if (s.hi > hi) { out[w].lo = hi; out[w].hi = s.hi; w++; }
  }
  p->capspans = p->nspans + 1;
  kvn_free(p->spans);
  p->spans = out;
  p->nspans = w;
}

static int kvn_preload_put_value(kvn_preload *p, uint32_t index, const unsigned char *data, size_t len) {
  unsigned char *buf = kvn_malloc(KVN_CHUNK);
  void *old;
  if (!buf) return SQLITE_NOMEM;
  if (len > KVN_CHUNK) len = KVN_CHUNK;
  memcpy(buf, data, len);
  if (len < KVN_CHUNK) memset(buf + len, 0, KVN_CHUNK - len);
  if (kvn_map_put(&p->values, index, buf, &old) != SQLITE_OK) { kvn_free(buf); return SQLITE_NOMEM; }
  kvn_free(old);
  return SQLITE_OK;
}

static void kvn_preload_clear(kvn_preload *p) {
  kvn_map_clear(&p->values, 1);
  kvn_free(p->spans);
  p->spans = NULL;
  p->nspans = p->capspans = 0;
}

/* ------------------------------------------------------------ the hot set */
/* What SQLite read and wrote since the file was opened (vfs/hint.py HotSet, same rules):
**   recent:   up to KVN_RECENT_CAP distinct chunks read, each with the tick of its last
**             read (ticks count reads, from 1, so they are unique); when full, the least
**             recent half is dropped before a new chunk is added;
**   interior: chunks whose page was last seen (read with its type byte, or written) as a
**             B-tree interior page (type 2 or 5); at most KVN_MAX_INTERIOR;
**   schema:   the children of page 1 as last seen whole (re-parsed when page 1's change
**             counter, header bytes 24..27, moves). */
#define KVN_RECENT_CAP 512
#define KVN_MAX_INTERIOR 65536
#define KVN_SCHEMA_MAX ((KVN_CHUNK - 112) / 2 + 1)
typedef struct {
  kvn_map recent;         /* index -> (void *)(uintptr_t)tick of its last read */
  unsigned long long tick;
  kvn_map interior;       /* index -> (void *)1 */
  uint32_t *schema;       /* chunk indices of page 1's children (allocated when needed) */
  int nschema;
  int have_counter;       /* page1_counter holds the change counter last parsed */
  unsigned char page1_counter[4];
  long long inserts;      /* chunks newly tracked (recent or interior) since open */
} kvn_hot;

typedef struct { unsigned long long tick; uint32_t index; } kvn_tick_ref;
static int kvn_tick_cmp(const void *a, const void *b) {
  const kvn_tick_ref *x = a, *y = b;
  return x->tick < y->tick ? -1 : x->tick > y->tick;
}
/* Every recent entry, least recent first, into refs (m->count of them); NULL if out of memory. */
static kvn_tick_ref *kvn_hot_sorted(const kvn_map *m) {
  kvn_tick_ref *refs = kvn_malloc((m->count ? m->count : 1) * sizeof *refs);
  if (!refs) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].val) {
      refs[k].tick = (unsigned long long)(uintptr_t)m->slots[i].val;
      refs[k].index = m->slots[i].key;
      k++;
    }
  qsort(refs, k, sizeof *refs, kvn_tick_cmp);
  return refs;
}

static uint32_t kvn_be32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Page 1 (whole) was seen: its children when it is an interior table page. */
static void kvn_hot_schema(kvn_hot *h, const unsigned char *page1) {
  if (h->have_counter && memcmp(h->page1_counter, page1 + 24, 4) == 0) return;
  h->have_counter = 1;
  memcpy(h->page1_counter, page1 + 24, 4);
  h->nschema = 0;
  const unsigned char *hdr = page1 + 100;
  if (hdr[0] != 5) return;
  if (!h->schema) {
    h->schema = kvn_malloc(KVN_SCHEMA_MAX * sizeof(uint32_t));
    if (!h->schema) return;  /* out of memory: a hint is only a hint */
  }
  int cells = (hdr[3] << 8) | hdr[4];
  if (cells > (KVN_CHUNK - 112) / 2) cells = (KVN_CHUNK - 112) / 2;
  uint32_t right = kvn_be32(hdr + 8);
  if (right > 1) h->schema[h->nschema++] = right - 1;
  for (int i = 0; i < cells; i++) {
    int at = (hdr[12 + 2 * i] << 8) | hdr[13 + 2 * i];
    if (at + 4 > KVN_CHUNK) continue;
    uint32_t child = kvn_be32(page1 + at);
    if (child > 1) h->schema[h->nschema++] = child - 1;
  }
}

/* Bytes [lo, hi) of chunk `index`, whose byte x is data[x], were read or written. */
static void kvn_hot_observe(kvn_hot *h, uint32_t index, const unsigned char *data, long long lo, long long hi) {
  long long at = index == 0 ? 100 : 0;
  if (!(lo <= at && at < hi)) return;
  unsigned char kind = data[at];
  void *old;
  if (kind == 2 || kind == 5) {
    if (!kvn_map_get(&h->interior, index) && h->interior.count < KVN_MAX_INTERIOR
        && kvn_map_put(&h->interior, index, (void *)1, &old) == SQLITE_OK)
      h->inserts++;
  } else {
    kvn_map_del(&h->interior, index);
  }
  if (index == 0 && lo == 0 && hi >= KVN_CHUNK) kvn_hot_schema(h, data);
}

/* A read of chunk `index` (recency only; kvn_hot_observe takes its bytes). */
static void kvn_hot_touch(kvn_hot *h, uint32_t index) {
  void *old;
  uintptr_t tick = (uintptr_t)++h->tick;
  if (kvn_map_get(&h->recent, index)) {
    kvn_map_put(&h->recent, index, (void *)tick, &old);
    return;
  }
  if (h->recent.count >= KVN_RECENT_CAP) {
    kvn_tick_ref *refs = kvn_hot_sorted(&h->recent);
    if (!refs) return;
    size_t drop = h->recent.count - KVN_RECENT_CAP / 2;
    for (size_t i = 0; i < drop; i++) kvn_map_del(&h->recent, refs[i].index);
    kvn_free(refs);
  }
  if (kvn_map_put(&h->recent, index, (void *)tick, &old) == SQLITE_OK) h->inserts++;
}

static void kvn_hot_clear(kvn_hot *h) {
  kvn_map_clear(&h->recent, 0);
  kvn_map_clear(&h->interior, 0);
  kvn_free(h->schema);
  h->schema = NULL;
  h->nschema = 0;
  h->have_counter = 0;
}

/* ---------------------------------------------------------------- the file */
/* Counters shared with vfs.stats.VFSStats (same names, same order). The memory is
** owned by the Python NativeStats object; the file only points at it while open. */
typedef struct {
  long long round_trips;
  long long live_reads;
  long long chunks_fetched;
  long long preload_hits;
  long long cache_hits;
  long long chunks_written;
  long long commits;
  long long large_commits;
  long long roll_forwards;
} kvn_stats;

typedef struct kvn_file {
  sqlite3_file base;          /* Base class. Must be first. */
  /* Fields below mirror vfs.file.KVFile's attributes of the same name (sizes in bytes). */
  long long size;             /* current size, pending writes included */
  long long committed_size;   /* size in the KV's meta */
  long long low_water;        /* smallest size since the last commit: KV bytes past it read as 0 */
  long long next_sequential;  /* chunk after the last read, for read-ahead detection */
  long long stream_end;       /* chunk after the last read-ahead: a miss there is sequential too */
  long long max_dirty_bytes;  /* dirty bytes held before kvn_py_spill */
  int readahead;              /* current read-ahead window, in chunks */
  int readahead_max;          /* largest read-ahead window, in chunks */
  int not_ready;              /* meta stale or a commit record pending: call kvn_py_ensure_ready first */
  int lock_level;             /* last xLock/xUnlock level (no cross-process locking) */
  int tail_pending;           /* a shrink's chunks past the end await phase two (KVFile._tail_from) */
  int shared_locks;           /* the database is shared (vfs.locks): locks go to KVFile.xLock & co */
  long long hot_inserts;      /* chunks newly tracked by the hot set (read by Python as a field: no call) */
  kvn_stats *stats;           /* never NULL while open (points at kvn_file_stats_fallback before setup) */
  /* Private to C. */
  void *py;                   /* cffi handle of the native.file.NativeFile; NULL until set up */
  PyObject *err;              /* exception stored by a failing callback (owned reference) */
  pthread_mutex_t mu;         /* guards the maps below against Python on other threads;
                                 never held while calling into Python */
  kvn_map dirty;              /* index -> kvn_dirty_entry: chunks written since the last commit */
  unsigned long long dirty_seq; /* last kvn_dirty_entry.seq handed out */
  kvn_map staged;             /* index -> (void*)1: newest copy is in the KV staging range */
  kvn_lru cache;              /* committed chunks fetched live or written by commits */
  kvn_preload preload;        /* chunk part of the preload map */
  kvn_hot hot;                /* chunks SQLite read since open (the hot-set hint) */
} kvn_file;

/* A dirty chunk. `data` first: a pointer to the entry is a pointer to the bytes. `seq`
** orders entries by first write, like the insertion order of KVFile's dirty dict, which
** decides the chunk cache's LRU order after a commit (and so the round trips). */
typedef struct {
  unsigned char data[KVN_CHUNK];
  unsigned long long seq;
} kvn_dirty_entry;

static kvn_stats kvn_file_stats_fallback;  /* counts of files whose Python side is gone */

/* Callbacks into Python, defined by cffi from native/build_native.py (extern "Python").
** Each returns SQLITE_OK or an SQLite (extended) error code, after kvn_set_error(). */
static int kvn_py_open(int serial, kvn_file *f);
static int kvn_py_ensure_ready(void *py);
static int kvn_py_fetch(void *py, int n, const uint32_t *indices, const unsigned char *staged, unsigned char *out);
static int kvn_py_spill(void *py);
static int kvn_py_sync(void *py, int flags);
static int kvn_py_close(void *py);
static int kvn_py_truncate(void *py, long long size);
static int kvn_py_file_control(void *py, int op, const char *name, const char *value, char *msg, int msglen);
/* op 0: xLock(level), 1: xUnlock(level), 2: xCheckReservedLock (*out). SQLITE_BUSY
** comes back without an exception: SQLite's busy handler retries (as apsw does). */
static int kvn_py_lock(void *py, int op, int level, int *out);

/* Keep `exc` (a PyObject*, passed as the address CPython's id() gives) to re-raise. */
static void kvn_set_error(kvn_file *f, void *exc) {
  /* Called from Python with the GIL held. */
  PyObject *o = (PyObject *)exc;
  PyObject *old = f->err;
  Py_XINCREF(o);
  f->err = o;
  Py_XDECREF(old);
}

/* Every call into Python is bracketed by kvn_enter/kvn_leave (KVN_PYCALL). An exception
** already pending on this thread (an earlier failure in the same SQLite call: SQLite
** keeps calling the VFS while it rolls back) is set aside during the call, so Python
** never runs with an exception set, and restored after it: the first failure wins, as
** with apsw's own Python VFS. A new failure is left set on the thread (kvn_set_error's
** exception, which names the KV cause), so apsw raises it instead of a bare
** "disk I/O error". */
typedef struct { PyGILState_STATE g; PyObject *t, *v, *tb; } kvn_pycall;

static void kvn_enter(kvn_pycall *c) {
  c->g = PyGILState_Ensure();
  PyErr_Fetch(&c->t, &c->v, &c->tb);
}

static void kvn_leave(kvn_file *f, kvn_pycall *c, int failed) {
  if (c->t) {
    Py_CLEAR(f->err);
    PyErr_Restore(c->t, c->v, c->tb);
  } else if (failed && f->err) {
    PyErr_SetObject((PyObject *)Py_TYPE(f->err), f->err);
    Py_CLEAR(f->err);
  } else {
    Py_CLEAR(f->err);
  }
  PyGILState_Release(c->g);
}

#define KVN_PYCALL(f, rc, call) \
  do { kvn_pycall kvn_c_; kvn_enter(&kvn_c_); rc = (call); kvn_leave((f), &kvn_c_, rc != SQLITE_OK); } while (0)

static void kvn_drop_error(kvn_file *f) {
  if (!f->err) return;
  PyGILState_STATE g = PyGILState_Ensure();
  Py_CLEAR(f->err);
  PyGILState_Release(g);
}

#define LOCK(f) pthread_mutex_lock(&(f)->mu)
#define UNLOCK(f) pthread_mutex_unlock(&(f)->mu)

static long long kvn_chunk_count(long long size) { return (size + KVN_CHUNK - 1) / KVN_CHUNK; }

static int kvn_ensure_ready(kvn_file *f) {
  if (!f->not_ready) return SQLITE_OK;
  int rc;
  KVN_PYCALL(f, rc, kvn_py_ensure_ready(f->py));
  return rc;
}

/* Copy bytes [off, off+len) of chunk `index` into dst if the chunk is held locally
** (dirty buffer, zero tail, preload, chunk cache); 0 when it must be fetched.
** vfs.file.KVFile._local, with the same hit counting. Caller holds mu. */
static int kvn_local_copy(kvn_file *f, uint32_t index, unsigned char *dst, size_t off, size_t len) {
  const unsigned char *d = kvn_map_get(&f->dirty, index);
  if (d) { memcpy(dst, d + off, len); return 1; }
  if (kvn_map_get(&f->staged, index)) return 0;
  if ((long long)index * KVN_CHUNK >= f->low_water) { memset(dst, 0, len); return 1; }
  const unsigned char *v;
  int st = kvn_preload_state(&f->preload, index, &v);
  if (st != KVN_NOT_LOADED) {
    f->stats->preload_hits++;
    if (st == KVN_FOUND) memcpy(dst, v + off, len); else memset(dst, 0, len);
    return 1;
  }
  if (kvn_cache_copy(&f->cache, index, dst, off, len)) {
    f->stats->cache_hits++;
    return 1;
  }
  return 0;
}

/* The read-ahead window after a miss at `first` (vfs.file.KVFile._next_window):
** a miss right after the last read, or right after the last read-ahead, is sequential
** and doubles the window (from KVN_FIRST_WINDOW, up to readahead_max); any other miss
** halves it and reads nothing ahead. Returns the chunks to read ahead. Caller holds mu. */
#define KVN_FIRST_WINDOW 64
static int kvn_next_window(kvn_file *f, uint32_t first, long long *gap) {
  long long slack = f->readahead / 8 > 2 ? f->readahead / 8 : 2;  /* another B-tree's pages in between */
  long long a = (long long)first - f->next_sequential, b = (long long)first - f->stream_end;
  *gap = first;
  if (a >= 0 && a <= slack) {
    *gap = f->next_sequential;
  } else if (b >= 0 && b <= slack) {
    *gap = f->stream_end;
  } else {
    f->readahead /= 2;
    return 0;
  }
  long long ra = f->readahead ? (long long)f->readahead * 2 : KVN_FIRST_WINDOW;
  f->readahead = (int)(ra < f->readahead_max ? ra : f->readahead_max);
  return f->readahead;
}

/* Whether read-ahead should fetch chunk i (not held locally). Caller holds mu. */
static int kvn_wanted_ahead(kvn_file *f, uint32_t i) {
  const unsigned char *v;
  return !kvn_map_get(&f->dirty, i) && !kvn_map_get(&f->staged, i) && !kvn_cache_contains(&f->cache, i)
         && kvn_preload_state(&f->preload, i, &v) == KVN_NOT_LOADED;
}

/* Fetch the chunks `miss[0..n)` (not held locally) in ONE KV call, with read-ahead
** (vfs.file.KVFile._fetch). On success *out holds KVN_CHUNK bytes per miss[i], in order
** (caller frees it with kvn_free). Called WITHOUT mu held. */
static int kvn_fetch(kvn_file *f, const uint32_t *miss, int n, unsigned char **out) {
  int rc = SQLITE_OK;
  *out = NULL;
  LOCK(f);
  long long gap;
  int ahead = kvn_next_window(f, miss[0], &gap);
  int want_cap = n + (f->cache.cap ? ahead : 0);
  uint32_t *want = kvn_malloc((size_t)want_cap * sizeof(uint32_t));
  unsigned char *staged = kvn_malloc((size_t)want_cap);
  if (!want || !staged) { UNLOCK(f); rc = SQLITE_IOERR_NOMEM; goto done; }
  memcpy(want, miss, (size_t)n * sizeof(uint32_t));
  int nw = n;
  if (ahead && f->cache.cap) {
    /* The chunks skipped between the stream and this miss, then the window after it
    ** (vfs.file.KVFile._fetch). */
    long long last_committed = kvn_chunk_count(f->low_water);
    for (long long g = gap > 0 ? gap : 0; g < (long long)miss[0] && nw < want_cap; g++)
      if (kvn_wanted_ahead(f, (uint32_t)g)) want[nw++] = (uint32_t)g;
    long long nxt = (long long)miss[n - 1] + 1;
    while (nw < want_cap && nxt < last_committed) {
      if (kvn_wanted_ahead(f, (uint32_t)nxt)) want[nw++] = (uint32_t)nxt;
      nxt++;
    }
    f->stream_end = nxt;
  }
  for (int i = 0; i < nw; i++) staged[i] = kvn_map_get(&f->staged, want[i]) != NULL;
  UNLOCK(f);

  unsigned char *buf = kvn_malloc((size_t)nw * KVN_CHUNK);
  if (!buf) { rc = SQLITE_IOERR_NOMEM; goto done; }
  KVN_PYCALL(f, rc, kvn_py_fetch(f->py, nw, want, staged, buf));
  if (rc != SQLITE_OK) {
    kvn_free(buf);
    goto done;
  }
  LOCK(f);
  pthread_mutex_lock(&kvn_cache_mu);
  for (int i = 0; i < nw; i++)
    if (!staged[i] && kvn_lru_put(&f->cache, want[i], buf + (size_t)i * KVN_CHUNK, KVN_CHUNK) != SQLITE_OK) {
      rc = SQLITE_IOERR_NOMEM;
      break;
    }
  pthread_mutex_unlock(&kvn_cache_mu);
  UNLOCK(f);
  if (rc != SQLITE_OK) kvn_free(buf);
  else *out = buf;
done:
  kvn_free(want);
  kvn_free(staged);
  return rc;
}

/* The dirty buffer of chunk `index`, created from its current contents (or zeros when
** `whole`: the caller overwrites all of it). Caller holds mu; it is released and
** retaken around a fetch. */
static int kvn_dirty_chunk(kvn_file *f, uint32_t index, int whole, unsigned char **out) {
  unsigned char *buf = kvn_map_get(&f->dirty, index);
  if (buf) { *out = buf; return SQLITE_OK; }
  kvn_dirty_entry *e = kvn_malloc(sizeof *e);
  if (!e) return SQLITE_IOERR_NOMEM;
  if (whole) {
    memset(e->data, 0, KVN_CHUNK);
  } else if (!kvn_local_copy(f, index, e->data, 0, KVN_CHUNK)) {
    unsigned char *fetched = NULL;
    UNLOCK(f);
    int rc = kvn_fetch(f, &index, 1, &fetched);
    LOCK(f);
    if (rc != SQLITE_OK) { kvn_free(e); return rc; }
    memcpy(e->data, fetched, KVN_CHUNK);
    kvn_free(fetched);
  }
  void *old;
  if (kvn_map_put(&f->dirty, index, e, &old) != SQLITE_OK) {
    kvn_free(e);
    return SQLITE_IOERR_NOMEM;
  }
  assert(old == NULL);
  e->seq = ++f->dirty_seq;
  *out = e->data;
  return SQLITE_OK;
}

/* Record chunks [first, last] of a read in the hot set, in order: recency, and the type
** byte of each page the read covers (out holds bytes [iOfst, iOfst + amount)). Caller
** holds mu. */
static void kvn_record_read(kvn_file *f, uint32_t first, uint32_t last, const unsigned char *out,
                            long long iOfst, long long amount) {
  for (uint32_t idx = first; idx <= last; idx++) {
    long long cstart = (long long)idx * KVN_CHUNK;
    long long lo = iOfst > cstart ? iOfst : cstart;
    long long hi = iOfst + amount < cstart + KVN_CHUNK ? iOfst + amount : cstart + KVN_CHUNK;
    kvn_hot_touch(&f->hot, idx);
    kvn_hot_observe(&f->hot, idx, out + (cstart - iOfst), lo - cstart, hi - cstart);
  }
  f->hot_inserts = f->hot.inserts;
}

/* ------------------------------------------------------------- io methods */
static int kvnRead(sqlite3_file *pFile, void *zBuf, int iAmt, sqlite3_int64 iOfst) {
  kvn_file *f = (kvn_file *)pFile;
  unsigned char *out = zBuf;
  int rc = kvn_ensure_ready(f);
  if (rc != SQLITE_OK) return rc;
  if (iOfst >= f->size) {
    memset(zBuf, 0, (size_t)iAmt);
    return SQLITE_IOERR_SHORT_READ;
  }
  long long amount = iAmt;
  if (amount > f->size - iOfst) amount = f->size - iOfst;
  uint32_t first = (uint32_t)(iOfst / KVN_CHUNK);
  uint32_t last = (uint32_t)((iOfst + amount - 1) / KVN_CHUNK);
  int npieces = (int)(last - first + 1);
  uint32_t stack_miss[16];
  uint32_t *miss = npieces <= 16 ? stack_miss : kvn_malloc((size_t)npieces * sizeof(uint32_t));
  if (!miss) return SQLITE_IOERR_NOMEM;
  int nmiss = 0;

  LOCK(f);
  for (uint32_t idx = first; idx <= last; idx++) {
    long long cstart = (long long)idx * KVN_CHUNK;
    long long lo = iOfst > cstart ? iOfst : cstart;
    long long hi = iOfst + amount < cstart + KVN_CHUNK ? iOfst + amount : cstart + KVN_CHUNK;
    if (!kvn_local_copy(f, idx, out + (lo - iOfst), (size_t)(lo - cstart), (size_t)(hi - lo)))
      miss[nmiss++] = idx;
  }
  if (!nmiss) kvn_record_read(f, first, last, out, iOfst, amount);  /* the common case: one lock */
  UNLOCK(f);

  if (nmiss) {
    unsigned char *buf;
    rc = kvn_fetch(f, miss, nmiss, &buf);
    if (rc == SQLITE_OK) {
      for (int i = 0; i < nmiss; i++) {
        long long cstart = (long long)miss[i] * KVN_CHUNK;
        long long lo = iOfst > cstart ? iOfst : cstart;
        long long hi = iOfst + amount < cstart + KVN_CHUNK ? iOfst + amount : cstart + KVN_CHUNK;
        memcpy(out + (lo - iOfst), buf + (size_t)i * KVN_CHUNK + (lo - cstart), (size_t)(hi - lo));
      }
      kvn_free(buf);
    }
  }
  if (miss != stack_miss) kvn_free(miss);
  if (rc != SQLITE_OK) return rc;
  f->next_sequential = (long long)last + 1;
  if (nmiss) {
    LOCK(f);
    kvn_record_read(f, first, last, out, iOfst, amount);
    UNLOCK(f);
  }
  if (amount < iAmt) {
    memset(out + amount, 0, (size_t)(iAmt - amount));  /* SQLite requires the zero fill */
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

static int kvnWrite(sqlite3_file *pFile, const void *zBuf, int iAmt, sqlite3_int64 iOfst) {
  kvn_file *f = (kvn_file *)pFile;
  const unsigned char *in = zBuf;
  int rc = kvn_ensure_ready(f);
  if (rc != SQLITE_OK) return rc;
  long long pos = iOfst, stop = iOfst + iAmt;
  LOCK(f);
  while (pos < stop) {
    uint32_t idx = (uint32_t)(pos / KVN_CHUNK);
    long long start = pos % KVN_CHUNK;
    long long end = stop - pos + start < KVN_CHUNK ? stop - pos + start : KVN_CHUNK;
    unsigned char *buf;
    rc = kvn_dirty_chunk(f, idx, start == 0 && end == KVN_CHUNK, &buf);
    if (rc != SQLITE_OK) { UNLOCK(f); return rc; }
    memcpy(buf + start, in + (pos - iOfst), (size_t)(end - start));
    pos += end - start;
  }
  if (stop > f->size) f->size = stop;
  int spill = (long long)f->dirty.count * KVN_CHUNK > f->max_dirty_bytes;
  UNLOCK(f);
  if (spill) {
    KVN_PYCALL(f, rc, kvn_py_spill(f->py));
  }
  return rc;
}

static int kvnTruncate(sqlite3_file *pFile, sqlite3_int64 size) {
  kvn_file *f = (kvn_file *)pFile;
  /* Rare (VACUUM, auto-vacuum): KVFile.xTruncate runs in Python on the C state, since a
  ** truncation may have to delete staged chunks in the KV. */
  int rc;
  KVN_PYCALL(f, rc, kvn_py_truncate(f->py, size));
  return rc;
}

static int kvnSync(sqlite3_file *pFile, int flags) {
  kvn_file *f = (kvn_file *)pFile;
  int rc;
  KVN_PYCALL(f, rc, kvn_py_sync(f->py, flags));  /* the commit: KVFile.xSync, in Python */
  return rc;
}

static int kvnFileSize(sqlite3_file *pFile, sqlite3_int64 *pSize) {
  kvn_file *f = (kvn_file *)pFile;
  int rc = kvn_ensure_ready(f);
  if (rc != SQLITE_OK) return rc;
  *pSize = f->size;
  return SQLITE_OK;
}

/* Locks: recorded in C for a database this connection has to itself (locking_mode=
** EXCLUSIVE, no Python call); for a shared one, vfs.locks' lock table via KVFile. */
static int kvn_lock_call(kvn_file *f, int op, int level, int *out) {
  int rc;
  KVN_PYCALL(f, rc, kvn_py_lock(f->py, op, level, out));
  return rc;
}
static int kvnLock(sqlite3_file *pFile, int level) {
  kvn_file *f = (kvn_file *)pFile;
  if (f->shared_locks && f->py) return kvn_lock_call(f, 0, level, NULL);
  f->lock_level = level;
  return SQLITE_OK;
}
static int kvnUnlock(sqlite3_file *pFile, int level) {
  kvn_file *f = (kvn_file *)pFile;
  if (f->shared_locks && f->py) return kvn_lock_call(f, 1, level, NULL);
  f->lock_level = level;
  return SQLITE_OK;
}
static int kvnCheckReservedLock(sqlite3_file *pFile, int *pResOut) {
  kvn_file *f = (kvn_file *)pFile;
  *pResOut = 0;
  if (f->shared_locks && f->py) return kvn_lock_call(f, 2, 0, pResOut);
  return SQLITE_OK;
}

/* Pending changes since the last commit (KVFile._has_pending_changes). */
static int kvn_has_pending(kvn_file *f) {
  LOCK(f);
  int r = f->dirty.count || f->staged.count || f->size != f->committed_size || f->low_water != f->committed_size
          || f->tail_pending;
  UNLOCK(f);
  return r;
}

static int kvnFileControl(sqlite3_file *pFile, int op, void *pArg) {
  kvn_file *f = (kvn_file *)pFile;
  const char *name = NULL, *value = NULL;
  if (op == SQLITE_FCNTL_PRAGMA) {
    char **az = (char **)pArg;  /* az[1]: name, az[2]: value or NULL */
    name = az[1];
    value = az[2];
  } else if (!(op == SQLITE_FCNTL_COMMIT_PHASETWO && kvn_has_pending(f))) {
    return SQLITE_NOTFOUND;  /* the common case: no Python call */
  }
  char msg[512];
  msg[0] = 0;
  /* 0: not handled, 1: handled, 2: refused with msg, 3: PRAGMA answered with msg as its
  ** result row (KVFile.xFileControl). */
  kvn_pycall c;
  kvn_enter(&c);
  int r = kvn_py_file_control(f->py, op, name, value, msg, (int)sizeof msg);
  kvn_leave(f, &c, 0);  /* a refusal is SQLite's error message, not a Python exception */
  if (r == 2) {
    if (op == SQLITE_FCNTL_PRAGMA) ((char **)pArg)[0] = sqlite3_mprintf("%s", msg);
    return SQLITE_ERROR;
  }
  if (r == 3 && op == SQLITE_FCNTL_PRAGMA) {
    char *answer = sqlite3_mprintf("%s", msg);
    if (!answer) return SQLITE_NOMEM;
    ((char **)pArg)[0] = answer;  /* SQLITE_OK with az[0] set: SQLite returns it as the row */
    return SQLITE_OK;
  }
  return r == 1 ? SQLITE_OK : SQLITE_NOTFOUND;
}

static int kvnSectorSize(sqlite3_file *pFile) {
  (void)pFile;
  return KVN_CHUNK;
}
static int kvnDeviceCharacteristics(sqlite3_file *pFile) {
  (void)pFile;
  return SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static void kvn_release(kvn_file *f) {
  kvn_map_clear(&f->dirty, 1);
  kvn_map_clear(&f->staged, 0);
  pthread_mutex_lock(&kvn_cache_mu);
  kvn_lru_clear(&f->cache);
  pthread_mutex_unlock(&kvn_cache_mu);
  kvn_preload_clear(&f->preload);
  kvn_hot_clear(&f->hot);
  kvn_drop_error(f);
  pthread_mutex_destroy(&f->mu);
}

static int kvnClose(sqlite3_file *pFile) {
  kvn_file *f = (kvn_file *)pFile;
  int rc = SQLITE_OK;
  if (f->py) {
    kvn_pycall c;
    kvn_enter(&c);
    rc = kvn_py_close(f->py);  /* flushes unsynced writes, releases the claim; a failure */
    kvn_leave(f, &c, 0);       /* is logged by Python (SQLite ignores xClose's result) */
    f->py = NULL;
  }
  f->stats = &kvn_file_stats_fallback;
  kvn_release(f);  /* the error (if any) was logged by Python; SQLite ignores xClose's code */
  return rc;
}

static const sqlite3_io_methods kvn_io_methods = {
  1,                          /* iVersion: no shm, no mmap */
  kvnClose, kvnRead, kvnWrite, kvnTruncate, kvnSync, kvnFileSize,
  kvnLock, kvnUnlock, kvnCheckReservedLock, kvnFileControl, kvnSectorSize,
  kvnDeviceCharacteristics,
  0, 0, 0, 0, 0, 0
};

/* -------------------------------------------------------------------- vfs */
static sqlite3_vfs *kvn_base(sqlite3_vfs *vfs) { return (sqlite3_vfs *)vfs->pAppData; }

static int kvn_is_ours(const char *name) {
  return name && strncmp(name, KVN_PREFIX, sizeof(KVN_PREFIX) - 1) == 0;
}

static int kvnOpen(sqlite3_vfs *vfs, const char *zName, sqlite3_file *pFile, int flags, int *pOutFlags) {
  if (!kvn_is_ours(zName)) {
    /* Temp files etc.: the default VFS owns this sqlite3_file entirely (szOsFile is
    ** at least its size), so SQLite calls its io methods directly from now on. */
    sqlite3_vfs *base = kvn_base(vfs);
    return base->xOpen(base, zName, pFile, flags, pOutFlags);
  }
  kvn_file *f = (kvn_file *)pFile;
  memset(f, 0, sizeof *f);
  f->base.pMethods = NULL;  /* SQLite calls xClose only when this is set */
  if (!(flags & SQLITE_OPEN_MAIN_DB)) return SQLITE_CANTOPEN;  /* no journal/WAL files */
  int serial = atoi(zName + sizeof(KVN_PREFIX) - 1);
  f->stats = &kvn_file_stats_fallback;
  f->next_sequential = -1;
  f->stream_end = -1;
  pthread_mutex_init(&f->mu, NULL);
  int rc;
  KVN_PYCALL(f, rc, kvn_py_open(serial, f));  /* builds the NativeFile: reads the meta (1 round trip) */
  if (rc != SQLITE_OK) {
    kvn_release(f);
    return rc;
  }
  assert(f->py != NULL);
  f->base.pMethods = &kvn_io_methods;
  if (pOutFlags) *pOutFlags = flags;
  return SQLITE_OK;
}

static int kvnDelete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
  if (kvn_is_ours(zName)) return SQLITE_OK;  /* no journal files exist; the db lives in the KV */
  return kvn_base(vfs)->xDelete(kvn_base(vfs), zName, syncDir);
}

static int kvnAccess(sqlite3_vfs *vfs, const char *zName, int flags, int *pResOut) {
  if (kvn_is_ours(zName)) {
    *pResOut = 0;  /* journal/WAL names: never exist (the Python VFS answers the same) */
    return SQLITE_OK;
  }
  return kvn_base(vfs)->xAccess(kvn_base(vfs), zName, flags, pResOut);
}

static int kvnFullPathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
  if (kvn_is_ours(zName)) {
    sqlite3_snprintf(nOut, zOut, "%s", zName);
    return SQLITE_OK;
  }
  return kvn_base(vfs)->xFullPathname(kvn_base(vfs), zName, nOut, zOut);
}

static void *kvnDlOpen(sqlite3_vfs *vfs, const char *z) { return kvn_base(vfs)->xDlOpen(kvn_base(vfs), z); }
static void kvnDlError(sqlite3_vfs *vfs, int n, char *z) { kvn_base(vfs)->xDlError(kvn_base(vfs), n, z); }
static void (*kvnDlSym(sqlite3_vfs *vfs, void *p, const char *z))(void) {
  return kvn_base(vfs)->xDlSym(kvn_base(vfs), p, z);
}
static void kvnDlClose(sqlite3_vfs *vfs, void *p) { kvn_base(vfs)->xDlClose(kvn_base(vfs), p); }
static int kvnRandomness(sqlite3_vfs *vfs, int n, char *z) { return kvn_base(vfs)->xRandomness(kvn_base(vfs), n, z); }
static int kvnSleep(sqlite3_vfs *vfs, int us) { return kvn_base(vfs)->xSleep(kvn_base(vfs), us); }
static int kvnCurrentTime(sqlite3_vfs *vfs, double *t) { return kvn_base(vfs)->xCurrentTime(kvn_base(vfs), t); }
static int kvnGetLastError(sqlite3_vfs *vfs, int n, char *z) {
  return kvn_base(vfs)->xGetLastError ? kvn_base(vfs)->xGetLastError(kvn_base(vfs), n, z) : 0;
}
static int kvnCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *t) {
  sqlite3_vfs *b = kvn_base(vfs);
  if (b->iVersion >= 2 && b->xCurrentTimeInt64) return b->xCurrentTimeInt64(b, t);
  double d;
  int rc = b->xCurrentTime(b, &d);
  *t = (sqlite3_int64)(d * 86400000.0);
  return rc;
}

static sqlite3_vfs kvn_vfs = {
  2, 0, 0, 0, KVN_VFS_NAME, 0,
  kvnOpen, kvnDelete, kvnAccess, kvnFullPathname,
  kvnDlOpen, kvnDlError, kvnDlSym, kvnDlClose,
  kvnRandomness, kvnSleep, kvnCurrentTime, kvnGetLastError, kvnCurrentTimeInt64,
  0, 0, 0
};
static int kvn_registered = 0;

/* Loadable-extension entry point: binds sqlite3_api to the loading library (apsw's)
** and registers the VFS once. SQLITE_OK_LOAD_PERMANENTLY keeps the module loaded after
** the loading connection closes. */
KVN_EXPORT int sqlite3_actordbnative_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  (void)db;
  SQLITE_EXTENSION_INIT2(pApi);
  if (sqlite3_libversion_number() < SQLITE_VERSION_NUMBER) {
    *pzErrMsg = sqlite3_mprintf("actor-db native VFS needs SQLite >= %s, found %s",
                                SQLITE_VERSION, sqlite3_libversion());
    return SQLITE_ERROR;
  }
  if (!kvn_registered) {
    sqlite3_vfs *base = sqlite3_vfs_find(0);
    if (!base) return SQLITE_ERROR;
    kvn_vfs.szOsFile = (int)sizeof(kvn_file) > base->szOsFile ? (int)sizeof(kvn_file) : base->szOsFile;
    kvn_vfs.mxPathname = base->mxPathname;
    kvn_vfs.pAppData = base;
    int rc = sqlite3_vfs_register(&kvn_vfs, 0);
    if (rc != SQLITE_OK) return rc;
    kvn_registered = 1;
  }
  return SQLITE_OK_LOAD_PERMANENTLY;
}

/* ------------------------------------------------- accessors for native/file.py */
/* All take mu: Python may call them from any thread (GIL held, mu never held across a
** Python call, so no lock-order cycle). */
static void kvn_setup(kvn_file *f, void *py, kvn_stats *stats, int cache_chunks, int readahead_max,
                      long long max_dirty_bytes) {
  LOCK(f);
  f->py = py;
  f->stats = stats;
  f->cache.cap = cache_chunks < 0 ? SIZE_MAX : (size_t)cache_chunks;
  f->readahead_max = readahead_max;
  f->max_dirty_bytes = max_dirty_bytes;
  UNLOCK(f);
}

static int kvn_dirty_count(kvn_file *f) { return (int)f->dirty.count; }
/* A dirty entry seen in order of first write (sorting copies of these needs no context). */
typedef struct { unsigned long long seq; uint32_t index; const unsigned char *data; } kvn_dirty_ref;
static int kvn_ref_cmp(const void *a, const void *b) {
  const kvn_dirty_ref *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}
/* Every dirty entry in order of first write (a dict's order in KVFile), at most n, into
** refs; returns how many. Caller holds mu. */
static size_t kvn_dirty_refs(kvn_file *f, kvn_dirty_ref *refs, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < f->dirty.cap && k < n; i++) {
    const kvn_dirty_entry *e = f->dirty.slots[i].val;
    if (!e) continue;
    refs[k].seq = e->seq;
    refs[k].index = f->dirty.slots[i].key;
    refs[k].data = e->data;
    k++;
  }
  qsort(refs, k, sizeof *refs, kvn_ref_cmp);
  return k;
}
/* Dirty chunk indices in order of first write. */
static int kvn_dirty_keys(kvn_file *f, uint32_t *out, int n) {
  LOCK(f);
  kvn_dirty_ref *refs = n > 0 ? kvn_malloc((size_t)n * sizeof *refs) : NULL;
  size_t k = refs ? kvn_dirty_refs(f, refs, (size_t)n) : 0;
  for (size_t i = 0; i < k; i++) out[i] = refs[i].index;
  kvn_free(refs);
  UNLOCK(f);
  return (int)k;
}
#define KVN_STACK_REFS 64  /* dirty refs sorted on the stack; more are malloc'd */

/* The commit's bulk hand-off (KVFile._dirty_snapshot). Returns the number of dirty
** chunks; when that is at most n, also writes them in order of first write: index j
** into indices[j], its KVN_CHUNK bytes into out + j * KVN_CHUNK. Returns -1 when out of
** memory. One call per commit (a caller with too small buffers grows them and calls
** again) instead of one per chunk. */
static int kvn_dirty_snapshot(kvn_file *f, uint32_t *indices, unsigned char *out, int n) {
  kvn_dirty_ref stack[KVN_STACK_REFS];
  LOCK(f);
  int count = (int)f->dirty.count;
  if (count == 0 || count > n) { UNLOCK(f); return count; }
  kvn_dirty_ref *refs = count <= KVN_STACK_REFS ? stack : kvn_malloc((size_t)count * sizeof *refs);
  if (!refs) { UNLOCK(f); return -1; }
  size_t k = kvn_dirty_refs(f, refs, (size_t)count);
  assert(k == (size_t)count);
  for (size_t i = 0; i < k; i++) {
    indices[i] = refs[i].index;
    memcpy(out + i * KVN_CHUNK, refs[i].data, KVN_CHUNK);
    /* KVFile._note_written: the commit's pages keep the hot set's interior current. */
    kvn_hot_observe(&f->hot, refs[i].index, refs[i].data, 0, KVN_CHUNK);
  }
  f->hot_inserts = f->hot.inserts;
  UNLOCK(f);
  if (refs != stack) kvn_free(refs);
  return count;
}
/* After a commit (KVFile._cache_committed): put every dirty chunk into the chunk cache,
** in order of first write, as KVFile does chunk by chunk (same LRU order). The dirty
** buffer then holds exactly the chunks the commit wrote. */
static int kvn_cache_put_dirty(kvn_file *f) {
  kvn_dirty_ref stack[KVN_STACK_REFS];
  int rc = SQLITE_OK;
  LOCK(f);
  size_t n = f->dirty.count;
  if (f->cache.cap && n) {
    kvn_dirty_ref *refs = n <= KVN_STACK_REFS ? stack : kvn_malloc(n * sizeof *refs);
    if (!refs) rc = SQLITE_NOMEM;
    else {
      size_t k = kvn_dirty_refs(f, refs, n);
      pthread_mutex_lock(&kvn_cache_mu);
      for (size_t i = 0; i < k && rc == SQLITE_OK; i++)
        rc = kvn_lru_put(&f->cache, refs[i].index, refs[i].data, KVN_CHUNK);
      pthread_mutex_unlock(&kvn_cache_mu);
      if (refs != stack) kvn_free(refs);
    }
  }
  UNLOCK(f);
  return rc;
}
/* After a commit (NativeFile._preload_committed): the committed chunks replace their
** preload entries where the preload covers them (a value, or ABSENT: covered with no
** value), in C, with no Python listener per chunk; a chunk the preload does not cover
** stays NOT_LOADED. The same outcome as re-mirroring each chunk key from the Python
** PreloadMap (which the caller updated), whose coverage this mirror equals. */
static int kvn_preload_put_dirty(kvn_file *f) {
  int rc = SQLITE_OK;
  LOCK(f);
  for (size_t i = 0; i < f->dirty.cap && rc == SQLITE_OK; i++) {
    const kvn_dirty_entry *e = f->dirty.slots[i].val;
    if (!e) continue;
    uint32_t index = f->dirty.slots[i].key;
    const unsigned char *old;
    int st = kvn_preload_state(&f->preload, index, &old);
    if (st == KVN_FOUND) memcpy((unsigned char *)old, e->data, KVN_CHUNK);  /* same size: in place */
    else if (st == KVN_ABSENT) rc = kvn_preload_put_value(&f->preload, index, e->data, KVN_CHUNK);
  }
  UNLOCK(f);
  return rc;
}
/* After a commit (KVFile._reset_after_commit): empty the dirty buffer and staged set;
** the committed size and low water become the current size. */
static void kvn_commit_done(kvn_file *f) {
  LOCK(f);
  kvn_map_clear(&f->dirty, 1);
  kvn_map_clear(&f->staged, 0);
  f->committed_size = f->low_water = f->size;
  UNLOCK(f);
}
/* Copy chunk `index` of the dirty buffer into out; returns 0 when not dirty. */
static int kvn_dirty_read(kvn_file *f, uint32_t index, unsigned char *out) {
  LOCK(f);
  const unsigned char *d = kvn_map_get(&f->dirty, index);
  if (d) memcpy(out, d, KVN_CHUNK);
  UNLOCK(f);
  return d != NULL;
}
static int kvn_dirty_write(kvn_file *f, uint32_t index, const unsigned char *data, int len) {
  LOCK(f);
  unsigned char *buf = kvn_map_get(&f->dirty, index);
  void *old;
  int rc = SQLITE_OK;
  if (!buf) {
    kvn_dirty_entry *e = kvn_malloc(sizeof *e);
    if (!e || kvn_map_put(&f->dirty, index, e, &old) != SQLITE_OK) {
      kvn_free(e);
      rc = SQLITE_NOMEM;
    } else {
      e->seq = ++f->dirty_seq;
      buf = e->data;
    }
  }
  if (rc == SQLITE_OK) {
    if (len > KVN_CHUNK) len = KVN_CHUNK;
    memcpy(buf, data, (size_t)len);
    memset(buf + len, 0, (size_t)(KVN_CHUNK - len));
  }
  UNLOCK(f);
  return rc;
}
/* The dirty buffer of chunk `index` (KVN_CHUNK writable bytes) or NULL; valid until the
** chunk leaves the dirty buffer. Python edits chunks in place through it. */
static unsigned char *kvn_dirty_ptr(kvn_file *f, uint32_t index) {
  LOCK(f); unsigned char *p = kvn_map_get(&f->dirty, index); UNLOCK(f); return p;
}
static void kvn_dirty_delete(kvn_file *f, uint32_t index) {
  LOCK(f); kvn_free(kvn_map_del(&f->dirty, index)); UNLOCK(f);
}
static void kvn_dirty_clear(kvn_file *f) { LOCK(f); kvn_map_clear(&f->dirty, 1); UNLOCK(f); }

static int kvn_staged_count(kvn_file *f) { return (int)f->staged.count; }
static int kvn_staged_keys(kvn_file *f, uint32_t *out, int n) {
  LOCK(f); int k = (int)kvn_map_keys(&f->staged, out, (size_t)n); UNLOCK(f); return k;
}
static int kvn_staged_has(kvn_file *f, uint32_t index) {
  LOCK(f); int r = kvn_map_get(&f->staged, index) != NULL; UNLOCK(f); return r;
}
static int kvn_staged_add(kvn_file *f, uint32_t index) {
  void *old;
  LOCK(f); int rc = kvn_map_put(&f->staged, index, (void *)1, &old); UNLOCK(f); return rc;
}
static void kvn_staged_discard(kvn_file *f, uint32_t index) { LOCK(f); kvn_map_del(&f->staged, index); UNLOCK(f); }
static void kvn_staged_clear(kvn_file *f) { LOCK(f); kvn_map_clear(&f->staged, 0); UNLOCK(f); }

#define CLOCK() pthread_mutex_lock(&kvn_cache_mu)
#define CUNLOCK() pthread_mutex_unlock(&kvn_cache_mu)
static int kvn_cache_count(kvn_file *f) { CLOCK(); int n = (int)f->cache.map.count; CUNLOCK(); return n; }
static int kvn_cache_keys(kvn_file *f, uint32_t *out, int n) {
  CLOCK(); int k = (int)kvn_map_keys(&f->cache.map, out, (size_t)n); CUNLOCK(); return k;
}
static int kvn_cache_has(kvn_file *f, uint32_t index) {
  CLOCK(); int r = kvn_map_get(&f->cache.map, index) != NULL; CUNLOCK(); return r;
}
/* LRU get (makes the entry most recent): copies into out, returns 0 when absent. */
static int kvn_cache_read(kvn_file *f, uint32_t index, unsigned char *out) {
  return kvn_cache_copy(&f->cache, index, out, 0, KVN_CHUNK);
}
static int kvn_cache_put(kvn_file *f, uint32_t index, const unsigned char *data, int len) {
  CLOCK(); int rc = kvn_lru_put(&f->cache, index, data, (size_t)len); CUNLOCK(); return rc;
}
static void kvn_cache_delete(kvn_file *f, uint32_t index) { CLOCK(); kvn_lru_del(&f->cache, index); CUNLOCK(); }
static void kvn_cache_clear(kvn_file *f) { CLOCK(); kvn_lru_clear(&f->cache); CUNLOCK(); }

static void kvn_preload_forget_range(kvn_file *f, uint64_t lo, uint64_t hi) {
  LOCK(f); kvn_preload_forget(&f->preload, lo, hi); UNLOCK(f);
}
static int kvn_preload_cover(kvn_file *f, uint64_t lo, uint64_t hi) {
  LOCK(f); int rc = kvn_preload_cover_span(&f->preload, lo, hi); UNLOCK(f); return rc;
}
static int kvn_preload_put(kvn_file *f, uint32_t index, const unsigned char *data, int len) {
  LOCK(f); int rc = kvn_preload_put_value(&f->preload, index, data, (size_t)len); UNLOCK(f); return rc;
}
/* 0 NOT_LOADED, 1 ABSENT, 2 FOUND (for tests). */
static int kvn_preload_lookup(kvn_file *f, uint32_t index) {
  const unsigned char *v;
  LOCK(f); int st = kvn_preload_state(&f->preload, index, &v); UNLOCK(f); return st;
}

/* The hot set for KVFile._hot_items: which 0 recent (most recent first), 1 interior
** (ascending), 2 schema; at most n indices into out; returns how many there are (call
** again with a larger buffer when that is more than n), or -1 when out of memory. */
static int kvn_uint32_cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}
static int kvn_hot_list(kvn_file *f, int which, uint32_t *out, int n) {
  int count = -1;
  LOCK(f);
  kvn_hot *h = &f->hot;
  if (which == 0) {
    count = (int)h->recent.count;
    if (count <= n && count > 0) {
      kvn_tick_ref *refs = kvn_hot_sorted(&h->recent);
      if (!refs) count = -1;
      else {
        for (int i = 0; i < count; i++) out[i] = refs[count - 1 - i].index;
        kvn_free(refs);
      }
    }
  } else if (which == 1) {
    count = (int)h->interior.count;
    if (count <= n) {
      kvn_map_keys(&h->interior, out, (size_t)n);
      qsort(out, (size_t)count, sizeof *out, kvn_uint32_cmp);
    }
  } else {
    count = h->nschema;
    if (count <= n && count > 0) memcpy(out, h->schema, (size_t)count * sizeof *out);
  }
  UNLOCK(f);
  return count;
}
/* A chunk about to be staged (KVFile._note_written for a spill): KVN_CHUNK bytes. */
static void kvn_hot_note(kvn_file *f, uint32_t index, const unsigned char *data) {
  LOCK(f);
  kvn_hot_observe(&f->hot, index, data, 0, KVN_CHUNK);
  f->hot_inserts = f->hot.inserts;
  UNLOCK(f);
}
/* Interior pages known from the hint the file was opened with (KVFile._hot_seed). */
static int kvn_hot_seed(kvn_file *f, const uint32_t *indices, int n) {
  int rc = SQLITE_OK;
  void *old;
  LOCK(f);
  for (int i = 0; i < n && rc == SQLITE_OK && f->hot.interior.count < KVN_MAX_INTERIOR; i++)
    rc = kvn_map_put(&f->hot.interior, indices[i], (void *)1, &old);
  UNLOCK(f);
  return rc;
}
static int kvn_hot_capacity(void) { return KVN_RECENT_CAP; }

static const char *kvn_entry_point(void) { return "sqlite3_actordbnative_init"; }
static const char *kvn_vfs_name(void) { return KVN_VFS_NAME; }
static const char *kvn_prefix(void) { return KVN_PREFIX; }
static const char *kvn_header_version(void) { return SQLITE_VERSION; }
