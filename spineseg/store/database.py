"""Engine, sessions and migrations. ``open_database`` applies Alembic migrations before use."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
# Alembic announces each of its plugins at INFO on every start; only the migrations matter.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
# ... and its migration context ("Context impl SQLiteImpl", "Running upgrade ...") on every
# command: library noise to a user; `-v` does not bring it back, a migration error still shows.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


# How long a SQLite statement waits for another connection's write to finish. Write
# transactions here are single short statements (a job's progress, a study row), so a wait
# longer than this means something is wrong: it fails with "database is locked" instead of
# stacking up behind it.
SQLITE_BUSY_TIMEOUT_MS = 5000
# Connections kept open to a SQLite file. Overflow is unbounded: a SQLite connection is a file
# handle, and a bounded pool shared with the web server's thread pool can deadlock (threads
# waiting for a connection while the requests holding connections wait for a thread).
SQLITE_POOL_SIZE = 16


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # erased values are overwritten, not left in free pages of the file (a client's file name, a
    # PACS return header: erased because they identify a patient)
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL (readers never wait for the writer), foreign
    keys, secure delete, a bounded busy timeout and a pool that never makes a thread wait for a connection."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=-1)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command  # imported here so the log level below applies to its import
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
    log.debug("database at %s migrated to head", url)


class Database:
    """The engine and a session factory; ``session()`` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Migrate the database at ``url`` (creating the SQLite file's folder) and open it."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    migrate(url)
    return Database(url)
