"""cffi build script of the native VFS: ``native._kvvfs`` (API mode).

Used by ``setup.py`` (``cffi_modules=["native/build_native.py:ffibuilder"]``) and runnable
by hand (``python native/build_native.py`` builds it in place). The extension is marked
optional: without a C compiler the install still succeeds and :mod:`native` reports
``AVAILABLE = False`` (the Python VFS is used).

Build facts (DESIGN.md section 7): compiled with ``-fvisibility=hidden`` so only
``PyInit__kvvfs`` and the SQLite entry point ``sqlite3_actordbnative_init`` are exported;
against the vendored ``native/include/sqlite3ext.h`` (the api-routines table and the VFS
structs are append-only, so headers of 3.40.1 are ABI-correct for apsw's newer SQLite;
the entry point refuses an older library at load time).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

CDEF = r"""
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
    long long size;
    long long committed_size;
    long long low_water;
    long long next_sequential;
    long long stream_end;
    long long max_dirty_bytes;
    int readahead;
    int readahead_max;
    int not_ready;
    int lock_level;
    int tail_pending;
    int shared_locks;
    long long hot_inserts;
    ...;
} kvn_file;

extern "Python" int kvn_py_open(int serial, kvn_file *f);
extern "Python" int kvn_py_ensure_ready(void *py);
extern "Python" int kvn_py_fetch(void *py, int n, const uint32_t *indices, const unsigned char *staged, unsigned char *out);
extern "Python" int kvn_py_spill(void *py);
extern "Python" int kvn_py_sync(void *py, int flags);
extern "Python" int kvn_py_close(void *py);
extern "Python" int kvn_py_truncate(void *py, long long size);
extern "Python" int kvn_py_file_control(void *py, int op, const char *name, const char *value, char *msg, int msglen);
extern "Python" int kvn_py_lock(void *py, int op, int level, int *out);

void kvn_setup(kvn_file *f, void *py, kvn_stats *stats, int cache_chunks, int readahead_max, long long max_dirty_bytes);
void kvn_set_error(kvn_file *f, void *exc);
long long kvn_live_allocations(void);
void kvn_prefetch(const uint64_t *lines);

int kvn_dirty_count(kvn_file *f);
int kvn_dirty_keys(kvn_file *f, uint32_t *out, int n);
int kvn_dirty_snapshot(kvn_file *f, uint32_t *indices, unsigned char *out, int n);
int kvn_cache_put_dirty(kvn_file *f);
int kvn_preload_put_dirty(kvn_file *f);
void kvn_commit_done(kvn_file *f);
int kvn_dirty_read(kvn_file *f, uint32_t index, unsigned char *out);
int kvn_dirty_write(kvn_file *f, uint32_t index, const unsigned char *data, int len);
unsigned char *kvn_dirty_ptr(kvn_file *f, uint32_t index);
void kvn_dirty_delete(kvn_file *f, uint32_t index);
void kvn_dirty_clear(kvn_file *f);

int kvn_staged_count(kvn_file *f);
int kvn_staged_keys(kvn_file *f, uint32_t *out, int n);
int kvn_staged_has(kvn_file *f, uint32_t index);
int kvn_staged_add(kvn_file *f, uint32_t index);
void kvn_staged_discard(kvn_file *f, uint32_t index);
void kvn_staged_clear(kvn_file *f);

int kvn_cache_count(kvn_file *f);
void kvn_cache_configure(long long budget_chunks);
void kvn_cache_totals(long long *out);
int kvn_cache_keys(kvn_file *f, uint32_t *out, int n);
int kvn_cache_has(kvn_file *f, uint32_t index);
int kvn_cache_read(kvn_file *f, uint32_t index, unsigned char *out);
int kvn_cache_put(kvn_file *f, uint32_t index, const unsigned char *data, int len);
void kvn_cache_delete(kvn_file *f, uint32_t index);
void kvn_cache_clear(kvn_file *f);

void kvn_preload_forget_range(kvn_file *f, uint64_t lo, uint64_t hi);
int kvn_preload_cover(kvn_file *f, uint64_t lo, uint64_t hi);
int kvn_preload_put(kvn_file *f, uint32_t index, const unsigned char *data, int len);
int kvn_preload_lookup(kvn_file *f, uint32_t index);

int kvn_hot_list(kvn_file *f, int which, uint32_t *out, int n);
int kvn_hot_seed(kvn_file *f, const uint32_t *indices, int n);
void kvn_hot_note(kvn_file *f, uint32_t index, const unsigned char *data);
int kvn_hot_capacity(void);

const char *kvn_entry_point(void);
const char *kvn_vfs_name(void);
const char *kvn_prefix(void);
const char *kvn_header_version(void);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "native._kvvfs",
    '#include "kvvfs.c"',
    include_dirs=[str(HERE), str(HERE / "include")],
    # Relative paths: setuptools wants sources inside the project tree.
    depends=["native/kvvfs.c", "native/include/sqlite3.h", "native/include/sqlite3ext.h"],
    extra_compile_args=["-fvisibility=hidden", "-O2", "-std=gnu11", "-Wall", "-Wno-unused-function"],
    libraries=["pthread"],
    optional=True,
)

if __name__ == "__main__":  # pragma: no cover - manual in-place build
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
