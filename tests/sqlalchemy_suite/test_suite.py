"""SQLAlchemy's dialect compliance suite, as every third-party dialect imports it."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
