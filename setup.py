"""Packaging for actor-db: the ``vfs``, ``native`` and ``actor_db`` packages."""

from setuptools import find_packages, setup

setup(
    name="actor-db",
    version="0.1.0",
    description="Per-actor SQLite databases whose pages live in a key-value store",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vfs", "vfs.*", "native", "native.*", "actor_db", "actor_db.*"]),
    package_data={"vfs": ["py.typed"], "actor_db": ["py.typed"],
                  "native": ["py.typed", "kvvfs.c", "build_native.py", "include/*.h"]},
    # The C VFS (native._kvvfs). Optional: without a C compiler the install succeeds and
    # native.AVAILABLE is False (vfs.connect then uses the Python VFS; one log line says so).
    cffi_modules=["native/build_native.py:ffibuilder"],
    install_requires=[
        "apsw>=3.45",
        "cffi>=1.15",
        "lru-dict>=1.3",
        "lmdb>=1.4",
        "lz4>=4.0",  # the LMDB and Redis drivers' value compression (actor_db.kv.codec)
        "sortedcontainers>=2.4",
        "prometheus_client>=0.17",
        "tqdm>=4.60",
        "sqlite-utils>=4.2",  # actor-db import of CSV/TSV/JSON lines (actor_db.tabular)
        "croniter>=2.0",  # cron expressions of durable schedules (actor_db.runtime.schedule)
    ],
    extras_require={
        "redis": ["redis>=5", "hiredis"],
        "sqlalchemy": ["sqlalchemy[asyncio]>=2.0"],
        "django": ["django>=4.2"],
        # actor-db serve (issue 22): the ASGI server and the HTTP client (actor_db.client).
        # sniffio: without it httpcore retries a failed "import sniffio" (a sys.path
        # search) twice on every request.
        "serve": ["uvicorn>=0.30", "httptools>=0.6", "uvloop>=0.19; sys_platform != 'win32'", "httpx>=0.27",
                  "sniffio>=1.3"],
        # actor-db backup --to s3:// (issue 24)
        "s3": ["boto3>=1.28"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "pytest-xdist>=3", "hypothesis>=6",
                 "matplotlib>=3.7", "tqdm>=4.60",  # the benchmark report's smoke test
                 "sqlalchemy[asyncio]>=2.0", "django>=4.2", "pandas>=2", "aiosqlite==0.22.1",  # integrations
                 "boto3>=1.28", "moto[server]>=5",  # backups, against moto's S3 server process
                 # Datasette's own tests on the drop-in (tests/test_datasette_suite.py): the
                 # release whose tests run, and the test extra of its own that they need
                 "datasette==0.65.2", "pytest-asyncio==1.5.0", "pytest-timeout==2.4.0", "beautifulsoup4==4.15.0",
                 "trustme==1.2.1", "cogapp==3.6.1"],
        "bench": ["pytest>=8", "pytest-benchmark>=4", "matplotlib>=3.7", "tqdm>=4.60", "redis>=5", "hiredis",
                  "uvicorn>=0.30", "httptools>=0.6", "httpx>=0.27", "sniffio>=1.3", "sqlalchemy[asyncio]>=2.0",
                  "django>=4.2"],
    },
    entry_points={
        "console_scripts": ["actor-db = actor_db.cli:main"],
        "sqlalchemy.dialects": [
            "sqlite.actordb = actor_db.sqlalchemy:ActorDBDialect",
            "sqlite.actordb_async = actor_db.sqlalchemy:ActorDBAsyncDialect",
        ],
    },
)
