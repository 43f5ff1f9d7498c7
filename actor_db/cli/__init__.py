"""The ``actor-db`` command: SQL shell, import/export, ``ls``, ``rm``, ``inspect``,
``integrity``, ``compact`` and ``bench``.

Usage (``actor-db --help`` and ``actor-db COMMAND --help`` say more)::

    actor-db [--kv lmdb:PATH | memory: | redis://HOST:PORT/DB] COMMAND ...
    actor-db shell ACTOR [--actor-type NAME] [-c SQL]...   # apsw's shell on the KV VFS
    actor-db import FILE ACTOR [--force]                   # SQLite file (or CSV/TSV/JSON lines) -> actor
    actor-db export ACTOR FILE.db [--force]                # actor database -> SQLite file
    actor-db restore ACTOR --bookmark B | --at TIME        # make a past state current (a new commit)
    actor-db branch ACTOR NEW [--at TIME | --bookmark B]   # a new actor from a current or past state
    actor-db backup --to s3://B/P [--follow]; restore --from s3://B/P   # object storage
    actor-db ls                                            # actors and database sizes
    actor-db rm ACTOR [-y]                                 # delete an actor's keys
    actor-db inspect ACTOR                                 # meta, chunks, preload coverage, startup cost
    actor-db integrity [ACTOR]                             # PRAGMA integrity_check, one or all actors
    actor-db compact                                       # give an LMDB store's free pages back
    actor-db bench [--out DIR] [-- ARGS]                   # the benchmark report

The store: ``--kv``, else the rule of :mod:`actor_db.defaults` (``$ACTOR_DB_KV``, else
``lmdb:./.actor-db``), the same rule the drop-in and ``Registry()`` follow.

Actors: ``ACTOR`` is the actor id that :meth:`actor_db.kv.KVStore.actor` takes. With
``--actor-type NAME`` it is the key of an actor of that type, whose id is
``"NAME/ACTOR"`` (the mapping :class:`actor_db.Registry` uses).

Invariants:

- A user mistake (unknown actor, bad ``--kv``, a file that is not SQLite, an existing
  target without ``--force``) is ONE line on stderr and exit status 1 (2 for bad
  command-line syntax); never a traceback. ``shell -c`` reports a failing command the
  same way. Warnings of the library (e.g. unsafe Redis persistence settings) are
  printed to stderr as log lines without ``-v``.
- ``import`` of a SQLite file first runs ``PRAGMA integrity_check`` on it (``--no-check``
  skips it), then copies it with SQLite's backup API into ONE write transaction of
  the KV VFS: pages past the VFS's dirty-byte bound are staged under the redo range,
  and the database only changes at the final commit (one atomic KV batch, or the
  redo protocol's commit record). A failed or interrupted import therefore leaves the
  previous database (or none) in place, its staged chunks are deleted, and an actor
  that had no database before has no keys afterwards (it does not show in ``ls``).
  CSV/TSV/JSON-lines files go through :mod:`actor_db.tabular` (sqlite-utils over the
  drop-in connection), also in one transaction.
- Ctrl-C during ``import``: the import is rolled back as above (further Ctrl-Cs are
  ignored until that is done), one line says whether anything was imported, exit 130.
- ``export`` writes a temporary file next to the target and renames it over the target
  only when the copy is complete (``os.replace``), so a failed export leaves no partial
  file.
- Writing commands (``shell``, ``import``, ``rm``) take single-writer ownership of the
  actor (its fencing token) when the driver supports it: a runtime that still holds
  the actor then fails its next commit loudly instead of overwriting the CLI's writes.
- ``bench`` writes its report into ``--out`` (default: the current directory), never
  into the checkout.

Left out: ``--kv`` URLs for drivers that do not exist; listing actors of a Redis
store with a namespace other than the URL's ``?namespace=`` parameter; ``compact``
for drivers other than LMDB (Redis frees memory itself).

Layout (one module per command group; the work itself is :mod:`actor_db.ops`, which
neither parses nor prints, so other front ends call the same functions):

- :mod:`actor_db.cli.main`: the parser, logging set-up and dispatch (:func:`main`).
- :mod:`actor_db.cli.common`: :class:`CLIError`, parent parsers, store opening,
  progress bar, confirmation, output escaping.
- :mod:`actor_db.cli.shell`, :mod:`~actor_db.cli.transfer` (import/export),
  :mod:`~actor_db.cli.history` (restore/branch), :mod:`~actor_db.cli.backup`,
  :mod:`~actor_db.cli.inspect` (ls/inspect), :mod:`~actor_db.cli.maintenance`
  (rm/integrity/compact), :mod:`~actor_db.cli.bench`.

Adding a command group (e.g. ``actor-db serve``): write ``actor_db/cli/serve.py`` with
``register(sub, parents)`` that calls ``sub.add_parser("serve", parents=[parents.common],
help=..., description=...)``, adds its options and ``p.set_defaults(handler=run)``
where ``run(args: argparse.Namespace) -> int`` returns the exit status (raise
:class:`CLIError` for a one-line error; open the store with
:func:`actor_db.cli.common.opened_store`), then add the module to
:data:`actor_db.cli.main.COMMAND_GROUPS` (one line). The help test
(``tests/test_cli.py``) then checks that it has help text.
"""

from actor_db.cli.bench import bench_command
from actor_db.cli.common import CLIError
from actor_db.cli.main import main
from actor_db.cli.maintenance import run_integrity
from actor_db.cli.shell import run_shell
from actor_db.defaults import DEFAULT_KV, open_store
from actor_db.ops.common import actor_id_for, read_consistently
from actor_db.ops.inspect import inspect_actor, list_actors
from actor_db.ops.maintenance import check_integrity, remove_actor
from actor_db.ops.transfer import (SQLITE_HEADER, ImportResult, check_source_integrity, check_sqlite_file,
                                   export_database, import_database, import_tabular, validate_source)

__all__ = ["main", "open_store", "actor_id_for", "import_database", "export_database", "ImportResult",
           "DEFAULT_KV", "SQLITE_HEADER", "check_integrity", "remove_actor", "CLIError", "inspect_actor",
           "list_actors", "run_shell", "run_integrity", "bench_command", "check_sqlite_file",
           "check_source_integrity", "validate_source", "import_tabular", "read_consistently"]
