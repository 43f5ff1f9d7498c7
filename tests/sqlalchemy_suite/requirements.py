"""The requirements class of the compliance run: SQLAlchemy's own, for both targets.

SQLAlchemy decides which of its suite's tests a backend runs through a requirements
class. Its own test run uses ``test/requirements.py:DefaultRequirements`` (not in the
wheel; ``tests/run_sqlalchemy_suite.py --fetch`` keeps it in
``.cache/sqlalchemy-VERSION/requirements.py``), which states what SQLite supports; the
reference (``sqlite+pysqlite``, ``sqlite+aiosqlite``) and ours (``sqlite+actordb``,
``sqlite+actordb_async``) run with this same class.

Three of its requirements name SQLite's drivers rather than a feature (the DB-API
cursor's ``lastrowid``). Our drivers are SQLAlchemy's ``pysqlite`` and ``aiosqlite``
dialects over our modules, whose cursors have ``lastrowid`` as the stdlib's do: they are
restated below with ours named beside the driver each is built on. Nothing else differs.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import sqlalchemy
from sqlalchemy.testing.exclusions import fails_on_everything_except, only_on, skip_if

_PATH = (pathlib.Path(__file__).resolve().parents[2] / ".cache" / f"sqlalchemy-{sqlalchemy.__version__}"
         / "requirements.py")
if not _PATH.is_file():
    raise RuntimeError(f"{_PATH} is missing: run `python tests/run_sqlalchemy_suite.py --fetch`")
_spec = importlib.util.spec_from_file_location("sqlalchemy_default_requirements", _PATH)
assert _spec is not None and _spec.loader is not None
_upstream = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_upstream)

_SQLITE_WITH_LASTROWID = ("sqlite+pysqlite", "sqlite+aiosqlite", "sqlite+pysqlite_numeric", "sqlite+pysqlite_dollar",
                          "sqlite+pysqlcipher", "sqlite+actordb", "sqlite+actordb_async")


class Requirements(_upstream.DefaultRequirements):  # type: ignore[misc,name-defined]
    """SQLAlchemy's ``DefaultRequirements``, with our drivers named where it names SQLite's."""

    @property
    def emulated_lastrowid(self) -> Any:
        """Upstream: every backend fails but MySQL, MariaDB, MSSQL and the SQLite drivers."""
        return fails_on_everything_except("mysql", "mariadb", "mssql", *_SQLITE_WITH_LASTROWID)

    @property
    def emulated_lastrowid_even_with_sequences(self) -> Any:
        """Upstream names ``sqlite+pysqlite`` (and ``pysqlcipher``): ``actordb`` is pysqlite's dialect."""
        return fails_on_everything_except("mysql", "mariadb", "sqlite+pysqlite", "sqlite+pysqlcipher",
                                          "sqlite+actordb")

    @property
    def dbapi_lastrowid(self) -> Any:
        """Upstream: the DB-API cursor has ``lastrowid`` (pysqlite, aiosqlite, ...)."""
        return skip_if("mssql+pymssql", "crashes on pymssql") + only_on(
            ["mysql", "mariadb", "mssql", "sqlite+pysqlite", "sqlite+aiosqlite", "sqlite+pysqlcipher",
             "sqlite+actordb", "sqlite+actordb_async"])
