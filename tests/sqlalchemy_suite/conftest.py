"""SQLAlchemy's pytest plugin, set up as a third-party dialect sets it up for its suite.

Run by ``tests/run_sqlalchemy_suite.py`` (pytest with ``--rootdir`` and ``-c`` this
directory's ``setup.cfg``); the project's own test run does not collect this directory
(``collect_ignore`` in ``tests/conftest.py``).
"""

import pytest
from sqlalchemy.dialects import registry

# The entry points of setup.py register them too; this makes the run independent of
# whether the package is installed (e.g. from a plain checkout on PYTHONPATH).
registry.register("sqlite.actordb", "actor_db.sqlalchemy", "ActorDBDialect")
registry.register("sqlite.actordb_async", "actor_db.sqlalchemy", "ActorDBAsyncDialect")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403
