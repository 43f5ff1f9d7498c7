"""SQLAlchemy dialects for KV-backed SQLite: ``sqlite+actordb://`` and ``sqlite+actordb_async://``.

Registered through the ``sqlalchemy.dialects`` entry point, so after ``pip install
actor-db`` a URL is all it takes::

    from sqlalchemy import create_engine
    engine = create_engine("sqlite+actordb:///orders?kv=lmdb:./data")

See :mod:`actor_db.sqlalchemy.dialect` and ``docs/sqlalchemy.md``.
"""

from actor_db.sqlalchemy.dialect import ActorDBAsyncDialect, ActorDBDialect

__all__ = ["ActorDBDialect", "ActorDBAsyncDialect"]
