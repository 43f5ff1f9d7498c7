"""A Django database backend for KV-backed SQLite: ``"ENGINE": "actor_db.django"``.

::

    DATABASES = {
        "default": {
            "ENGINE": "actor_db.django",
            "NAME": "shop",                                  # an actor id
            "OPTIONS": {"kv": "lmdb:/var/lib/shop-data"},    # the store; default: $ACTOR_DB_KV
        }
    }

It is Django's own SQLite backend (SQL, schema editor, introspection, migrations) with
the drop-in :mod:`actor_db.dbapi` underneath; see :mod:`actor_db.django.base` and
``docs/django.md``.
"""
