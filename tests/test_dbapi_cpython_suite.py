"""CPython's own ``test.test_sqlite3`` passes against ``actor_db.dbapi`` on KV-backed pages.

Runs ``tests/run_cpython_sqlite3_suite.py`` in a subprocess (it replaces ``sqlite3`` in
``sys.modules``) and checks its JSON summary: at least 99% of the tests the suite runs on
this Python pass (its own skips, bigmem tests and one needing SQLite < 3.8.3, skip on the
stdlib too), no test fails outside the documented exclusion list, and the databases really
were KV-backed.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("run_cpython_sqlite3_suite.py")


def _has_cpython_suite() -> bool:
    try:
        import test.test_sqlite3  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.parametrize("driver", ["memory", "lmdb"])
def test_cpython_sqlite3_suite_on_kv(driver: str, tmp_path: pathlib.Path, record_property: pytest.RecordProperty) -> None:
    assert _has_cpython_suite(), "this Python has no test.test_sqlite3 (install the python test package)"
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--driver", driver, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    summary_line = [line for line in proc.stdout.splitlines() if line.startswith("cpython-sqlite3:")]
    print(*summary_line, sep="\n")
    for line in summary_line:  # printed in the run's terminal summary (tests/conftest.py)
        record_property("summary_line", f"[{driver}] {line}")
    assert out.exists(), proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["failures"] == [], proc.stderr[-5000:]
    assert summary["total"] >= 400
    assert summary["passed"] >= 0.99 * summary["runnable"], summary
    assert summary["passed"] >= 0.98 * summary["total"], summary
    assert summary["kv_opens"] >= 400, "the suite's databases were not redirected to the KV"
    assert proc.returncode == 0
