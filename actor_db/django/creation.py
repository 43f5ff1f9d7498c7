"""Test databases of the ``actor_db.django`` backend: actors in the same store."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteCreation

__all__ = ["DatabaseCreation"]


class DatabaseCreation(SQLiteCreation):  # type: ignore[misc]
    """Django's SQLite test-database life cycle, with actors in place of files."""

    def _is_kv(self, name: Any) -> bool:
        return name is not None and not self.is_in_memory_db(name)

    def _store(self) -> Any:
        return self.connection.store(self.connection.settings_dict["OPTIONS"].get("kv"))

    def _get_test_db_name(self) -> str:
        settings = self.connection.settings_dict
        name, test_name = settings["NAME"], settings["TEST"]["NAME"]
        if test_name and self._is_kv(test_name):
            return str(test_name)
        if test_name or not self._is_kv(name):
            return super()._get_test_db_name()  # type: ignore[no-any-return]
        return f"test_{name if not isinstance(name, Path) else name.name}"

    def _delete(self, name: str) -> None:
        self._store().actor(name).delete_all()

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        name = self._get_test_db_name()
        if keepdb or not self._is_kv(name):
            return name
        if verbosity >= 1:
            self.log(f"Creating test database (actor {name!r}) for alias {self.connection.alias!r}...")
        try:
            self._delete(name)
        except Exception as exc:
            self.log(f"Got an error deleting the old test database: {exc}")
            sys.exit(2)
        return name

    def get_test_db_clone_settings(self, suffix: str) -> dict[str, Any]:
        settings = self.connection.settings_dict
        if not self._is_kv(settings["NAME"]):
            return super().get_test_db_clone_settings(suffix)  # type: ignore[no-any-return]
        root, ext = os.path.splitext(str(settings["NAME"]))  # as Django names file clones
        return {**settings, "NAME": f"{root}_{suffix}{ext}"}

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        source = self.connection.settings_dict["NAME"]
        if not self._is_kv(source):
            super()._clone_test_db(suffix, verbosity, keepdb)
            return
        target = self.get_test_db_clone_settings(suffix)["NAME"]
        from actor_db import dbapi

        store = self._store()
        self._delete(target)
        src = dbapi.connect(source, kv=store)
        dst = dbapi.connect(target, kv=store)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        if test_database_name and self._is_kv(test_database_name):
            self._delete(test_database_name)

    def test_db_signature(self) -> tuple[Any, ...]:
        return (self.connection.settings_dict["NAME"], self._get_test_db_name())
