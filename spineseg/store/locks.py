"""A lock every machine honours: PostgreSQL's session advisory lock.

The model registry's changes (register, import, promote, rollback) are read-modify-writes of
its state file; on one machine ``flock`` serialises them, but network filesystems do not all
honour ``flock`` (NFSv3 without lockd, some SMB mounts, FUSE). With PostgreSQL the registry
takes this lock as well (``guard_registry``), so processes on different machines exclude each
other through the database that already coordinates their jobs.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from spineseg.store.database import Database

REGISTRY_LOCK = "spineseg.registry"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are numbered)."""
    return zlib.crc32(name.encode()) - 2**31


class DatabaseLock:
    """``pg_advisory_lock`` on one connection held for the duration, re-entrant within this
    object; ``inner`` (another lock with ``held()``) is taken inside it. PostgreSQL releases it
    by itself when the holder's connection dies, so a killed process never leaves it taken."""

    def __init__(self, database: Database, name: str, inner: Any = None) -> None:
        self.database, self.key, self.inner = database, lock_key(name), inner
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._connection: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                connection = self.database.engine.connect()
                try:
                    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
                    connection.commit()
                except BaseException:
                    connection.close()
                    raise
                self._connection = connection
            self._depth += 1
            try:
                if self.inner is None:
                    yield
                else:
                    with self.inner.held():
                        yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                        self._connection.commit()
                    finally:
                        self._connection.close()
                        self._connection = None


def guard_registry(registry: Any, database: Database) -> None:
    """With PostgreSQL, make ``registry``'s changes take the database lock too (SQLite: one
    machine, the file lock suffices)."""
    if database.engine.dialect.name == "postgresql":
        registry.use_lock(DatabaseLock(database, REGISTRY_LOCK, inner=registry.file_lock))
