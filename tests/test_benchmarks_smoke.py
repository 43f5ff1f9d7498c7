"""The benchmark report in its tiny ``--quick`` mode: it runs, and its round trips are
the ones the round-trip tests assert (tests/test_round_trips.py, DESIGN.md section 3).

One run of ``python -m benchmarks.report --quick`` (a child process: it runs pytest
itself) over this issue's suites; the checks read the generated ``summary.json``,
``results.json`` (pytest-benchmark's JSON) and ``REPORT.md``. One test function, so
that pytest-xdist never runs the report twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITES = ["bench_cold_start.py", "bench_commits.py", "bench_warm_reads.py", "bench_concurrency.py", "bench_memory.py"]


def _run_report(out: Path) -> dict[str, Any]:
    env = dict(os.environ, ACTOR_DB_BENCH_CACHE=str(out / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--quick", "--no-progress", "--out", str(out), "--suites", *SUITES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {
        "out": out,
        "summary": json.loads((out / "summary.json").read_text()),
        "results": json.loads((out / "results.json").read_text()),
        "markdown": (out / "REPORT.md").read_text(),
    }


def _extra(results: dict[str, Any], group: str, **match: Any) -> dict[str, Any]:
    found = [b["extra_info"] for b in results["benchmarks"]
             if b["group"] == group and all(b["extra_info"].get(k) == v for k, v in match.items())]
    assert len(found) == 1, (group, match, len(found))
    return found[0]


def _check_cold_start_with_preload_is_one_round_trip(report: dict[str, Any]) -> None:
    cold = report["summary"]["cold_start_round_trips"]
    # A database within the 768 KiB preload budget: the preload call, then nothing live.
    assert cold["ours+preload"] == {"64 KiB": 1, "512 KiB": 1}
    # Without preload, vfs.connect's open is one call (meta, record, head chunks).
    assert cold["ours, no preload"]["64 KiB"] <= 2
    assert cold["naive KV VFS"]["64 KiB"] > cold["ours+preload"]["64 KiB"]
    if "runtime wake" in cold:  # waking an existing actor: exactly one KV call (issue 3)
        assert cold["runtime wake"] == {"64 KiB": 1, "512 KiB": 1}
    info = _extra(report["results"], "cold-start", backend="ours+preload", size_bytes=64 * 1024)
    assert info["round_trips_min"] == info["round_trips_max"] == 1


def _check_commit_round_trips_match_the_round_trip_tests(report: dict[str, Any]) -> None:
    commits = report["summary"]["commit_round_trips"]
    assert commits["ours"]["update-1-row"] == 1  # warm UPDATE: one atomic batch
    assert commits["ours"]["insert-100-rows"] == 1
    assert commits["ours"]["insert-1MiB"] <= 2  # test_one_mib_insert_is_at_most_two_calls_without_batch_limit
    rivet = commits["ours, RivetKit limits"]["insert-1MiB"]
    assert 2 < rivet <= 8  # test_one_mib_insert_under_rivetkit_limits_uses_redo
    assert _extra(report["results"], "commits", backend="ours, RivetKit limits", operation="insert-1MiB")["large_commits"] >= 1
    assert commits["naive KV VFS"]["update-1-row"] > 1


def _check_warm_reads_cost_no_round_trip(report: dict[str, Any]) -> None:
    warm = report["summary"]["warm_read_round_trips"]["ours"]
    assert warm == {"point-select": 0, "range-scan": 0}
    assert report["summary"]["warm_read_ratio_to_local"]["ours"]["point-select"] > 0


def _check_report_tables_show_the_json_figures(report: dict[str, Any]) -> None:
    md = report["markdown"]
    assert "| ours+preload | 1 | 1 |" in md
    assert "| commit: update-1-row | ours | 1 |" in md
    assert "RivetKit native path (published, theirs)" in md
    for section in ("## 1. Cold start", "## 2. Commits", "## 3. Warm reads", "## 4. Concurrency", "## 5. Memory"):
        assert section in md
    for image in report["summary"]["images"]:
        assert (report["out"] / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({image})" in md
    assert len(report["summary"]["images"]) == 4


def _check_concurrency_and_memory_rows(report: dict[str, Any]) -> None:
    rows = report["summary"]["concurrency"]
    assert [r["actors"] for r in rows] == [1, 8]
    for r in rows:
        assert r["throughput_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert 0 < r["round_trips_per_action"] < 1  # reads are free, writes one batch each
    memory = report["summary"]["memory"]
    assert memory["per_awake_bytes"] > memory["per_sleeping_bytes"]


def test_quick_report_matches_the_round_trip_tests(tmp_path: Path) -> None:
    report = _run_report(tmp_path)
    _check_cold_start_with_preload_is_one_round_trip(report)
    _check_commit_round_trips_match_the_round_trip_tests(report)
    _check_warm_reads_cost_no_round_trip(report)
    _check_report_tables_show_the_json_figures(report)
    _check_concurrency_and_memory_rows(report)
