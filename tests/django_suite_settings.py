"""Settings for Django's own test suite run against ``actor_db.django``
(``tests/test_django_suite.py``): Django's ``test_sqlite`` settings with this backend.

The store is ``memory:`` because Django's parallel runner forks its workers after
creating the test databases, and an LMDB store cannot cross ``fork()``
(docs/drivers.md); each worker gets a copy of the in-memory store with its clone.
"""

DATABASES = {
    "default": {"ENGINE": "actor_db.django", "NAME": "django_default", "OPTIONS": {"kv": "memory:"}},
    "other": {"ENGINE": "actor_db.django", "NAME": "django_other", "OPTIONS": {"kv": "memory:"}},
}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
