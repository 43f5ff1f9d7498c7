"""The async subset of SQLAlchemy's compliance suite (``sqlite+aiosqlite``, ``sqlite+actordb_async``).

An async driver differs from its sync twin only in how the connection and cursor are
adapted (awaited calls, transactions, server-side cursors, isolation levels); the SQL,
types and reflection queries are the same dialect's. So the async run takes the suite's
modules about connections, transactions, statements and results, and leaves
``test_reflection`` (907 tests) and ``test_types`` (442), which the sync run covers, out
(they are 2/3 of the async run's time).
"""

from sqlalchemy.testing.suite.test_cte import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_ddl import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_dialect import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_insert import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_results import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_rowcount import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_select import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_sequence import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_table_via_select import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_unicode_ddl import *  # noqa: F401,F403
from sqlalchemy.testing.suite.test_update_delete import *  # noqa: F401,F403
