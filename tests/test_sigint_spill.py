"""Real ``SIGINT`` s into a writer that spills large transactions (issue 29, item 4).

The deterministic interrupt tests (:mod:`tests.test_interrupts`) raise at chosen calls;
a real signal is delivered between any two bytecodes of the main thread, including in
the middle of the VFS's own bookkeeping (``_spill``, the redo log's staging). Here a
writer process (:mod:`tests.sigint_worker`) receives ``SIGNALS`` real ``SIGINT`` s at
random intervals; afterwards its live connection must never have answered
``CorruptError``, and a fresh process's view (this one) must pass ``integrity_check``
and hold every transaction the writer acknowledged, whole.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

import vfs
from actor_db.kv import LmdbKV
from tests.helpers import integrity
from tests.sigint_worker import KEEP, ROWS

SIGNALS = 120
"""Real SIGINTs per run."""
MAX_INTERVAL_S = 0.08
"""Signals are sent at uniform random intervals in ``(0, MAX_INTERVAL_S]`` (~5 s in all;
a transaction takes ~35 ms, so about half of them are interrupted)."""
HANG_GUARD_S = 60.0

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("seed", [1])
def test_real_sigints_into_spilling_writer_lose_nothing(tmp_path: pathlib.Path, vfs_kind: str, seed: int) -> None:
    rng = random.Random(seed)
    spec = {"path": str(tmp_path / "store"), "actor": "sigint", "vfs": vfs_kind, "acks": str(tmp_path / "acks"),
            "stop": str(tmp_path / "stop"), "max_transactions": 100_000, "seed": seed}
    proc = subprocess.Popen([sys.executable, "-m", "tests.sigint_worker", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        sent = 0
        deadline = time.monotonic() + HANG_GUARD_S
        while sent < SIGNALS and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0005, MAX_INTERVAL_S))
            proc.send_signal(signal.SIGINT)
            sent += 1
        pathlib.Path(spec["stop"]).touch()
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    acked = [int(line) for line in pathlib.Path(spec["acks"]).read_text().split()]
    assert sent == SIGNALS
    assert report["interrupts"] >= SIGNALS // 4, report  # the signals really landed in the writer
    assert acked, report
    assert report["corrupt"] == 0, report

    store = LmdbKV(spec["path"])
    try:
        con = vfs.connect(store.actor("sigint"), vfs=vfs_kind)
        try:
            assert integrity(con) == "ok"
            present = {k for (k,) in con.execute("SELECT k FROM acks")}
            assert set(acked) <= present, f"acknowledged but lost: {sorted(set(acked) - present)[:10]}"
            counts = dict(con.execute("SELECT k, count(*) FROM big GROUP BY k"))
            newest = max(present)
            for k in present:  # a transaction is whole: all its rows, or deleted by a later one
                assert counts.get(k, 0) in ((ROWS,) if k > newest - KEEP else (0, ROWS)), (k, counts.get(k))
        finally:
            con.close()
    finally:
        store.close()


# ---------------------------------------------------------------- the pieces, in-process
def test_sigint_inside_a_file_method_is_an_io_error_that_is_still_a_keyboard_interrupt(tmp_path: pathlib.Path) -> None:
    """While a Python-VFS file is open, the main thread's SIGINT handler raises, inside a
    file method, an exception apsw hands SQLite as an I/O error (so SQLite rolls back the
    whole transaction) which ``except KeyboardInterrupt`` still catches; anywhere else a
    plain ``KeyboardInterrupt``. The default handler is back once the file closes."""
    import apsw

    from actor_db.kv import MemoryKV
    from vfs import interrupts

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    kv = MemoryKV().actor("handler")
    setup = vfs.connect(kv, vfs="python")
    setup.execute("CREATE TABLE t (v BLOB)")
    setup.execute("INSERT INTO t SELECT zeroblob(3000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)")
    setup.close()
    con = vfs.connect(kv, vfs="python", cache_chunks=0)
    try:
        assert signal.getsignal(signal.SIGINT) is interrupts._on_sigint
        file = con.kv_file
        file.preload.clear()  # every page SQLite reads now is one KV call
        con.execute("BEGIN")
        con.execute("CREATE TABLE u (x)")  # a write transaction
        original = file._kv.get_many
        fired: list[bool] = []

        def get_many(keys: list[bytes]) -> list[bytes | None]:
            if not fired:
                fired.append(True)
                signal.raise_signal(signal.SIGINT)  # a real signal, handled at the next bytecode
            return original(keys)

        file._kv.get_many = get_many  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt) as caught:
            con.execute("SELECT count(*) FROM t WHERE v > x''").fetchall()
        file._kv.get_many = original  # type: ignore[method-assign]
        assert fired
        assert isinstance(caught.value, apsw.IOError)
        assert caught.value.extendedresult == apsw.SQLITE_IOERR_READ  # type: ignore[attr-defined]
        assert not con.in_transaction  # SQLite rolled the whole transaction back
        assert integrity(con) == "ok"
        with pytest.raises(KeyboardInterrupt) as outside:
            signal.raise_signal(signal.SIGINT)
        assert type(outside.value) is KeyboardInterrupt  # outside the VFS: untouched
    finally:
        con.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_holds_sigint_until_the_section_ends() -> None:
    from vfs import interrupts

    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")  # the section runs to its end
            with interrupts.deferred():  # nests
                steps.append("inner")
        steps.append("never")
    assert steps == ["after the signal", "inner"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
