"""The framework integrations against the stdlib on a local file (issue 27).

- ``django-orm``: Django's ORM creating 10,000 rows (``Model.objects.create`` in one
  ``atomic`` block) and reading them back (``list(Model.objects.all())``), on the
  ``actor_db.django`` backend (an actor in an LMDB store) and on Django's own SQLite
  backend with a file.
- ``sqlalchemy-core``: SQLAlchemy Core inserting 10,000 rows (one ``executemany`` in one
  transaction) and selecting them all, on ``sqlite+actordb`` (LMDB) and on ``sqlite://``
  (pysqlite, a file).

Each backend's figure is the median of its rounds; the report puts ours next to the
stdlib's. Django is configured once per process with both databases.

Run: ``python -m pytest benchmarks/bench_integrations.py --benchmark-json=out.json``.
"""

from __future__ import annotations

import datetime
import itertools
import pathlib
import sys
from decimal import Decimal
from typing import Any, Iterator

import pytest

from benchmarks import backends
from benchmarks.measure import record
from benchmarks.settings import settings

ROWS = 1000 if settings().quick else 10_000
ROUNDS = 2 if settings().quick else 5
VFS = "native" if backends.native_available() else "python"
BACKENDS = ["actor-db", "stdlib file"]
_runs = itertools.count()


@pytest.fixture(scope="module")
def django_aliases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import django
    from django.conf import settings as django_settings

    tmp = tmp_path_factory.mktemp("bench_django")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "django_project"))
    if not django_settings.configured:
        django_settings.configure(
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "default.sqlite3")},
                "actor-db": {"ENGINE": "actor_db.django", "NAME": "bench-shop",
                             "OPTIONS": {"kv": f"lmdb:{tmp / 'store'}", "vfs": VFS}},
                "stdlib file": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "shop.sqlite3")},
            },
            INSTALLED_APPS=["shop"], USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            SECRET_KEY="bench")
        django.setup()
    from django.core.management import call_command

    for alias in BACKENDS:
        call_command("migrate", database=alias, verbosity=0)
    yield {name: name for name in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_django_orm_create_and_read(benchmark: Any, django_aliases: dict[str, str], backend: str) -> None:
    from django.db import transaction

    from shop.models import Customer, Order

    benchmark.group = "django-orm"
    alias = django_aliases[backend]
    placed = datetime.date(2026, 1, 1)

    def create_and_read() -> None:
        with transaction.atomic(using=alias):
            customer = Customer.objects.using(alias).create(name=f"c{next(_runs)}")
            for i in range(ROWS):
                Order.objects.using(alias).create(customer=customer, total=Decimal(i), placed=placed)
        assert len(list(Order.objects.using(alias).filter(customer=customer))) == ROWS

    benchmark.pedantic(create_and_read, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record(benchmark, backend=backend, rows=ROWS, vfs=VFS if backend == "actor-db" else None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sqlalchemy_core_insert_and_select(benchmark: Any, tmp_path: pathlib.Path, backend: str) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

    benchmark.group = "sqlalchemy-core"
    url = (f"sqlite+actordb:///bench-core?kv=lmdb:{tmp_path / 'store'}&vfs={VFS}" if backend == "actor-db"
           else f"sqlite:///{tmp_path / 'core.db'}")
    engine = create_engine(url)
    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), Column("run", Integer),
                  Column("name", String(40)))
    metadata.create_all(engine)
    runs = itertools.count()

    def insert_and_select() -> None:
        run = next(runs)
        with engine.begin() as conn:
            conn.execute(insert(table), [{"run": run, "name": f"row-{i}"} for i in range(ROWS)])
        with engine.connect() as conn:
            assert len(conn.execute(select(table).where(table.c.run == run)).all()) == ROWS

    try:
        benchmark.pedantic(insert_and_select, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        engine.dispose()
    record(benchmark, backend=backend, rows=ROWS, vfs=VFS if backend == "actor-db" else None)
