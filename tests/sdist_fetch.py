"""One package's files from its source distribution on the package index.

The framework suites our integrations are compared on (Django's ``tests/``, SQLAlchemy's
``test/requirements.py``, Datasette's ``tests/``) are not in the wheels; the runners in
``tests/run_*_suite.py`` fetch them once into ``.cache/`` with :func:`fetch_from_sdist`.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Callable

__all__ = ["fetch_from_sdist"]


def fetch_from_sdist(package: str, version: str, inner: str, target: pathlib.Path) -> pathlib.Path:
    """Download ``package==version``'s sdist (``pip download --no-binary``, 600 s at most)
    and move its file or folder ``inner`` (a path below the archive's top folder, e.g.
    ``"tests"``) to ``target``, replacing what was there; returns ``target``."""
    with tempfile.TemporaryDirectory(prefix=f"{package}-sdist-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", f"{package}=={version}", "-d", tmp],
                       check=True, capture_output=True, text=True, timeout=600)
        (archive,) = pathlib.Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if (m.name.split("/", 1) + [""])[1] == inner or
                       (m.name.split("/", 1) + [""])[1].startswith(inner + "/")]
            if not members:
                raise FileNotFoundError(f"{archive.name} has no {inner}")
            tar.extractall(tmp, members=members, filter="data")
        (found,) = pathlib.Path(tmp).glob(f"*/{inner}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(found), str(target))
    return target


def parse_runner_args(parser: argparse.ArgumentParser, argv: list[str] | None,
                      fetch: Callable[[], pathlib.Path]) -> argparse.Namespace | None:
    """A suite runner's command line: with ``--fetch``, fetch the suite, print where it is
    and return ``None`` (the runner exits 0); otherwise ``--target`` is required."""
    args = parser.parse_args(argv)
    if args.fetch:
        print(fetch())
        return None
    if args.target is None:
        parser.error("--target is required (or --fetch)")
    return args
