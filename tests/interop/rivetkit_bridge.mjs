// Runs RivetKit's own SQLite VFS (@rivetkit/sqlite-vfs, pinned in package.json) over a
// KV loaded from a dump the Python tests wrote, and writes the KV back as dumps.
//
// Usage: node --liftoff-only rivetkit_bridge.mjs COMMAND.json   (liftoff: no slow exit
// while V8 finishes optimizing SQLite's WebAssembly in the background)
// COMMAND: {"result": path, "jobs": [JOB, ...]}; the result file gets one entry per job:
// {"results": [...], "writes": n, "reads": n, "bytes": n, "crashed": bool} (with "cuts":
// {"cuts": [entry, ...]}); writes, reads: KV calls; bytes: keys + values put.
// JOB: {
//   "dump_in": path,              KV to start from (see "Dump format"; null = empty KV)
//   "dump_out": path,             KV after the run (with "cuts": path + "." + cut)
//   "steps": [{"sql": s, "query": bool}],  run in order on one connection (a fresh
//                                 SqliteVfs per run); a query step's rows go to
//                                 "results" (blobs as lowercase hex); an error is
//                                 reported as {"error": message} and ends the run
//   "cuts": [n, ...]              optional: run the steps once per n on a fresh copy of the
//                                 KV; the KV after the first n write calls (put, putBatch,
//                                 deleteBatch) is dumped, and every later KV call fails,
//                                 as if the process had died right there
// }
// Dump format: repeated [u32 BE key length][key][u32 BE value length][value], keys as the
// VFS sees them (the actor's namespace is the file). One write call = one KV round trip.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { SqliteVfs } from "@rivetkit/sqlite-vfs";

// SQLite's WebAssembly, compiled once for every SqliteVfs of this process (the same file
// RivetKit loads itself when given no module).
const require = createRequire(import.meta.url);
const wasmModule = new WebAssembly.Module(
  readFileSync(require.resolve("@rivetkit/sqlite/dist/wa-sqlite-async.wasm")));

function loadDump(path) {
  const kv = new Map();
  if (!path || !existsSync(path)) return kv;
  const buf = readFileSync(path);
  let o = 0;
  while (o < buf.length) {
    const kl = buf.readUInt32BE(o); o += 4;
    const key = buf.subarray(o, o + kl); o += kl;
    const vl = buf.readUInt32BE(o); o += 4;
    const value = new Uint8Array(buf.subarray(o, o + vl)); o += vl;
    kv.set(Buffer.from(key).toString("hex"), value);
  }
  return kv;
}

function saveDump(kv, path) {
  const parts = [];
  for (const hex of [...kv.keys()].sort()) {
    const key = Buffer.from(hex, "hex");
    const value = Buffer.from(kv.get(hex));
    const head = Buffer.alloc(4); head.writeUInt32BE(key.length);
    const vhead = Buffer.alloc(4); vhead.writeUInt32BE(value.length);
    parts.push(head, key, vhead, value);
  }
  writeFileSync(path, Buffer.concat(parts));
}

class Crashed extends Error {}

function kvOptions(state) {
  const hex = (k) => Buffer.from(k).toString("hex");
  const check = () => { if (state.dead) throw new Crashed("crashed"); };
  const write = (apply) => {
    check();
    if (state.cut !== null && state.writes >= state.cut) {
      saveDump(state.kv, state.dumpAt);
      state.dead = true;
      throw new Crashed("crashed");
    }
    state.writes++;
    apply();
  };
  const stored = (k, v) => { state.bytes += k.length + v.length; state.kv.set(hex(k), v.slice()); };
  const read = (k) => { const v = state.kv.get(hex(k)); return v ? v.slice() : null; };
  return {
    get: async (k) => { check(); state.reads++; return read(k); },
    getBatch: async (ks) => { check(); state.reads++; return ks.map(read); },
    put: async (k, v) => write(() => stored(k, v)),
    putBatch: async (es) => write(() => { for (const [k, v] of es) stored(k, v); }),
    deleteBatch: async (ks) => write(() => { for (const k of ks) state.kv.delete(hex(k)); }),
    onError: () => {},
  };
}

function plain(value) {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (typeof value === "bigint") return Number(value);
  return value;
}

async function run(cmd, cut) {
  const state = { kv: loadDump(cmd.dump_in), writes: 0, reads: 0, bytes: 0, cut, dead: false,
                  dumpAt: cut === null ? null : `${cmd.dump_out}.${cut}` };
  const vfs = new SqliteVfs(wasmModule);
  const results = [];
  let db = null;
  try {
    db = await vfs.open("actor", kvOptions(state));
    for (const step of cmd.steps) {
      if (step.query) {
        const { rows } = await db.query(step.sql);
        results.push(rows.map((row) => row.map(plain)));
      } else {
        await db.exec(step.sql);
      }
    }
    await db.close();
    db = null;
  } catch (error) {
    if (!state.dead) results.push({ error: String(error && error.message || error) });
  } finally {
    if (db !== null) { try { await db.close(); } catch { /* the "process" died */ } }
    try { await vfs.destroy(); } catch { /* idem */ }
  }
  if (cut === null) saveDump(state.kv, cmd.dump_out);
  else if (!state.dead) saveDump(state.kv, state.dumpAt);  // finished before the cut
  return { results, writes: state.writes, reads: state.reads, bytes: state.bytes, crashed: state.dead };
}

const command = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
for (const job of command.jobs) {
  if (job.cuts) {
    const cuts = [];
    for (const cut of job.cuts) cuts.push(await run(job, cut));
    out.push({ cuts });
  } else {
    out.push(await run(job, null));
  }
}
writeFileSync(command.result, JSON.stringify(out));
process.reallyExit(0);
