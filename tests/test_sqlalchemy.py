"""The SQLAlchemy dialects ``sqlite+actordb`` and ``sqlite+actordb_async`` (entry points),
on a real LMDB store and a real redis-server, both VFSes; pandas through them."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from typing import Any, Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool

from tests.drivers import DRIVERS, DriverFactory, RedisFactory

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)),
              Column("qty", Integer))


def _spec(driver: DriverFactory, tmp: pathlib.Path) -> str:
    if isinstance(driver, RedisFactory):
        return f"{driver.url()}?namespace={driver.namespace}"
    return f"lmdb:{tmp / 'store'}"


@pytest.fixture(params=["lmdb", "redis"], ids=str)
def kv_spec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp(request.param)
    factory = DRIVERS[request.param](tmp)
    try:
        yield _spec(factory, tmp)
    finally:
        factory.cleanup()


def _url(kv_spec: str, name: str, vfs_kind: str, driver: str = "actordb") -> str:
    from urllib.parse import quote

    return f"sqlite+{driver}:///{name}?kv={quote(kv_spec, safe='')}&vfs={vfs_kind}"


def test_core_and_reflection(kv_spec: str, vfs_kind: str) -> None:
    engine = create_engine(_url(kv_spec, "sa-core", vfs_kind))
    try:
        assert isinstance(engine.pool, QueuePool)  # real connections, usable from any thread
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(items), [{"name": f"item-{i}", "qty": i} for i in range(500)])
        with engine.connect() as conn:
            assert conn.execute(select(func.sum(items.c.qty))).scalar() == sum(range(500))
            assert conn.execute(select(items.c.name).where(items.c.id == 10)).scalar() == "item-9"
        assert inspect(engine).get_table_names() == ["items"]
        with pytest.raises(Exception):
            with engine.begin() as conn:
                conn.execute(text("UPDATE items SET qty = 0"))
                raise RuntimeError("roll back")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(items).where(items.c.qty == 0)).scalar() == 1
    finally:
        engine.dispose()


def test_pooled_connections_from_threads(kv_spec: str, vfs_kind: str) -> None:
    engine = create_engine(_url(kv_spec, "sa-threads", vfs_kind), pool_size=4)
    try:
        metadata.create_all(engine)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(20):
                    with engine.begin() as conn:
                        conn.execute(insert(items).values(name=f"t{n}", qty=i))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(items)).scalar() == 80
    finally:
        engine.dispose()


def _server_side_names(sync_conn: Any) -> list[str]:
    """``stream_results`` on the async engine gets aiosqlite's server-side cursor (what
    SQLAlchemy's ServerSideCursorsTest checks, by the driver's name, for ``aiosqlite`` only)."""
    result = sync_conn.execution_options(stream_results=True).execute(select(items.c.name).order_by(items.c.id))
    assert result.cursor.server_side is True
    return list(result.scalars().all())


def test_async_engine(kv_spec: str, vfs_kind: str) -> None:
    async def main() -> None:
        engine = create_async_engine(_url(kv_spec, "sa-async", vfs_kind, "actordb_async"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                await conn.execute(insert(items), [{"name": "a", "qty": 1}, {"name": "b", "qty": 2}])
            async with engine.connect() as conn:
                result = await conn.execute(select(items.c.name).order_by(items.c.id))
                assert result.scalars().all() == ["a", "b"]
                streamed = await conn.stream(select(items.c.name).order_by(items.c.id))
                assert [name async for name in streamed.scalars()] == ["a", "b"]
                assert await conn.run_sync(_server_side_names) == ["a", "b"]
        finally:
            await engine.dispose()
    asyncio.run(asyncio.wait_for(main(), 120))


def test_pandas_to_sql_and_read_sql(kv_spec: str, vfs_kind: str) -> None:
    import pandas as pd
    engine = create_engine(_url(kv_spec, "sa-pandas", vfs_kind))
    try:
        frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp": [4.5, 19.0, 31.2]})
        frame.to_sql("weather", engine, index=False)
        back = pd.read_sql("SELECT city, temp FROM weather ORDER BY temp", engine)
        assert back.to_dict("list") == {"city": ["Oslo", "Lima", "Pune"], "temp": [4.5, 19.0, 31.2]}
    finally:
        engine.dispose()


def test_plain_sqlite_urls_stay_plain_files(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plain.db"
    engine = create_engine(f"sqlite+actordb:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x)"))
        assert path.exists()
    finally:
        engine.dispose()
    with pytest.raises(ValueError, match="unknown option"):
        create_engine("sqlite+actordb:///x?bogus=1").connect()
