"""The first-run link: one random token, single use, expiring; the first admin is created once
even under concurrent submissions; refused as soon as any account exists."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.services.first_run import FirstRunClosed, FirstRunLink, create_first_admin, open_first_run
from spineseg.store import accounts
from spineseg.store.database import Database, open_database

PASSWORD = "a long password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = open_database(f"sqlite:///{tmp_path / 'spineseg.db'}")
    yield db
    db.dispose()


def users(database: Database) -> list[tuple[str, str]]:
    with database.session() as session:
        return [(u.username, u.role) for u in accounts.list_users(session)]


def test_the_token_is_random_printed_once_and_only_its_hash_is_kept() -> None:
    link = FirstRunLink()
    token = link.issue()
    assert len(token) >= 32 and token != FirstRunLink().issue()
    assert link.take_token() == token and link.take_token() is None
    assert token not in repr(vars(link))  # kept as a digest only, once announced
    link.check(token)
    with pytest.raises(FirstRunClosed, match="not valid") as wrong:
        link.check(token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert wrong.value.status == 404
    with pytest.raises(FirstRunClosed, match="not valid"):
        link.check("")


def test_the_token_expires() -> None:
    clock = Clock()
    link = FirstRunLink(ttl_s=1800, clock=clock)
    token = link.issue()
    clock.now += 1799
    link.check(token)
    clock.now += 1
    with pytest.raises(FirstRunClosed, match=r"expired .*30 minutes.*restart") as expired:
        link.check(token)
    assert expired.value.status == 410 and not link.is_open


def test_no_link_when_an_account_exists(database: Database) -> None:
    assert open_first_run(database).is_open
    with database.session() as session:
        accounts.create_user(session, username="ada", password=PASSWORD, role="viewer")
    link = open_first_run(database)
    assert not link.is_open and link.take_token() is None
    with pytest.raises(FirstRunClosed, match="no first-run link") as closed:
        link.check("anything")
    assert closed.value.status == 404


def test_bad_input_keeps_the_link_and_success_spends_it(database: Database) -> None:
    link = open_first_run(database)
    token = link.take_token()
    with pytest.raises(InputError, match="at least 8 characters"):
        create_first_admin(database, link, token=token, username="ada", password="short", password_again="short")
    with pytest.raises(InputError, match="differ"):
        create_first_admin(database, link, token=token, username="ada", password=PASSWORD, password_again="other one")
    with pytest.raises(InputError, match="username"):
        create_first_admin(database, link, token=token, username="a b", password=PASSWORD, password_again=PASSWORD)
    assert users(database) == [] and link.is_open
    user = create_first_admin(database, link, token=token, username="ada", password=PASSWORD,
                              password_again=PASSWORD)
    assert (user.username, user.role) == ("ada", "admin") and users(database) == [("ada", "admin")]
    with pytest.raises(FirstRunClosed, match="exists already"):
        create_first_admin(database, link, token=token, username="eve", password=PASSWORD, password_again=PASSWORD)
    assert users(database) == [("ada", "admin")]


def test_refused_when_an_account_appeared_meanwhile(database: Database) -> None:
    link = open_first_run(database)
    token = link.take_token()
    with database.session() as session:  # e.g. `spineseg users create` from a script
        accounts.create_user(session, username="bo", password=PASSWORD, role="clinician")
    with pytest.raises(FirstRunClosed, match="exists already") as closed:
        create_first_admin(database, link, token=token, username="eve", password=PASSWORD, password_again=PASSWORD)
    assert closed.value.status == 410 and users(database) == [("bo", "clinician")]


def test_concurrent_submissions_create_one_admin(database: Database) -> None:
    link = open_first_run(database)
    token = link.take_token()
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def submit(i: int) -> None:
        start.wait()
        try:
            create_first_admin(database, link, token=token, username=f"admin{i}", password=PASSWORD,
                               password_again=PASSWORD)
            outcomes.append("created")
        except FirstRunClosed:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created"] + ["refused"] * 5
    assert len(users(database)) == 1 and users(database)[0][1] == "admin"


def test_the_database_guard_inserts_once_without_the_lock(database: Database) -> None:
    with database.session() as session:
        assert accounts.create_first_admin(session, username="ada", password=PASSWORD) is not None
    with database.session() as session:
        assert accounts.create_first_admin(session, username="eve", password=PASSWORD) is None
    assert users(database) == [("ada", "admin")]
    with database.session() as session:
        assert accounts.authenticate(session, username="ada", password=PASSWORD) is not None
