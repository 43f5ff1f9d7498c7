"""actor-db benchmarks: pytest-benchmark suites (``bench_<area>.py``) and the report.

Run everything and write ``benchmarks/REPORT.md`` plus PNG plots with::

    python -m benchmarks.report

The suites are not part of the test suite (``testpaths = ["tests"]``); run one alone
with ``pytest benchmarks/bench_commits.py``. Every KV-bound figure is measured on
:class:`benchmarks.kvlatency.LatencyKV`, which injects a per-round-trip latency and
counts round trips exactly.
"""
