"""``actor-db bench``: run the benchmark report into ``--out`` (never into the checkout)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from actor_db.cli.common import CLIError, Parents

__all__ = ["register", "bench_command"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``bench`` to the subcommands."""
    p = sub.add_parser("bench", parents=[parents.common], help="run the benchmark report",
                       description="Run the benchmark report (benchmarks.report, else pytest-benchmark "
                                   "over benchmarks/). Arguments after -- are passed on.")
    p.add_argument("--out", metavar="DIR", help="write REPORT.md, plots and JSON here (default: .)")
    p.add_argument("--dir", metavar="DIR", help="the benchmarks directory (default: the checkout's)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the report (after --)")
    p.set_defaults(handler=_run_bench)


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]  # actor_db/cli/bench.py -> the checkout


def bench_command(extra: Sequence[str], directory: str | None, out: str | os.PathLike[str] = ".") -> list[str]:
    """The command ``actor-db bench`` runs: ``python -m benchmarks.report --out OUT`` when
    the project has it, else pytest-benchmark over ``benchmarks/`` writing
    ``OUT/benchmark-results.json``. Nothing is written into the checkout."""
    root = Path(directory).resolve() if directory else _project_root() / "benchmarks"
    if not root.is_dir():
        raise CLIError(f"{root}: no benchmarks directory (run from a source checkout, or pass --dir)")
    target = Path(out).resolve()
    if (root / "report.py").is_file() and (root / "__init__.py").is_file():
        return [sys.executable, "-m", f"{root.name}.report", "--out", str(target), *extra]
    return [sys.executable, "-m", "pytest", str(root), "-q", "-p", "no:cacheprovider",
            "-o", "python_files=bench_*.py test_*.py", "--benchmark-only",
            f"--benchmark-json={target / 'benchmark-results.json'}", *extra]


def _run_bench(args: argparse.Namespace) -> int:
    extra = list(args.extra[1:] if args.extra[:1] == ["--"] else args.extra)
    out = Path(args.out or ".")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{out}: cannot create the output directory: {exc.strerror}") from exc
    cmd = bench_command(extra, args.dir, out)
    env = dict(os.environ)
    # The benchmarks are not an installed package: make the checkout importable.
    root = str(Path(args.dir).resolve().parent if args.dir else _project_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.call(cmd, env=env)
