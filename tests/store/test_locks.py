"""The registry's database lock on a real PostgreSQL server: two holders (as on two machines)
exclude each other, one holder may nest, and a holder that dies releases it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from spineseg.registry import Registry
from spineseg.store.database import Database, open_database
from spineseg.store.locks import REGISTRY_LOCK, DatabaseLock, guard_registry
from tests.servers import PostgresServer, missing_servers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    reason = missing_servers()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    database = open_database(server.new_database())
    try:
        yield database
    finally:
        database.dispose()
        server.stop()


def test_two_holders_exclude_each_other_and_one_may_nest(database: Database) -> None:
    first, second = DatabaseLock(database, "t1"), DatabaseLock(database, "t1")
    order: list[str] = []
    with first.held(), first.held():  # re-entrant within one holder
        order.append("first in")
        def wait_for_it() -> None:
            with second.held():
                order.append("second in")

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(0.5)
        assert order == ["first in"]  # still waiting for the lock
        order.append("first out")
    waiter.join(10)
    assert order == ["first in", "first out", "second in"]


def test_a_holder_that_dies_releases_the_lock(database: Database) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from spineseg.store.database import Database\n"
        "from spineseg.store.locks import DatabaseLock\n"
        f"lock = DatabaseLock(Database({database.url!r}), 't2')\n"
        "with lock.held():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    acquired = threading.Event()

    def take() -> None:
        with DatabaseLock(database, "t2").held():
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert acquired.wait(10)


def test_the_registry_takes_the_database_lock_with_postgresql(database: Database, tmp_path) -> None:
    registry = Registry(tmp_path / "models")
    guard_registry(registry, database)
    other = DatabaseLock(database, REGISTRY_LOCK)
    taken = threading.Event()

    def change_elsewhere() -> None:
        with other.held():
            taken.set()

    with registry.mutation_lock():
        threading.Thread(target=change_elsewhere, daemon=True).start()
        assert not taken.wait(0.5)  # another machine's change waits
    assert taken.wait(10)
