"""The audit chain: appends from many threads form one unbroken chain; a row deleted, inserted
or edited directly in SQLite is detected and named."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from spineseg.store import accounts, audit
from spineseg.store.database import Database, open_database

SECRET = "audit-test-secret-0123456789abcdefghijk"


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = open_database(f"sqlite:///{tmp_path / 'spineseg.db'}")
    audit.use_key(db, SECRET)
    yield db
    db.dispose()


def db_file(database: Database) -> str:
    return database.url.removeprefix("sqlite:///")


def append_events(database: Database, n: int, user: str = "ada") -> None:
    for i in range(n):
        with database.session() as session:
            accounts.record(session, username=user, action="study.view", target=f"s{i}")


def verify(database: Database, **kwargs) -> audit.ChainReport:
    with database.session() as session:
        return audit.verify(session, **kwargs)


def rows(database: Database) -> list[tuple[int, int]]:
    with sqlite3.connect(db_file(database)) as raw:
        return raw.execute("SELECT id, seq FROM audit_events ORDER BY seq").fetchall()


def test_an_untouched_chain_verifies_and_reports_its_head(database: Database) -> None:
    append_events(database, 5)
    report = verify(database)
    assert report.intact and report.rows == 5 and report.head_seq == 5 and len(report.head_hmac) == 64
    assert [seq for _id, seq in rows(database)] == [1, 2, 3, 4, 5]


def test_concurrent_writers_never_fork_the_chain(database: Database) -> None:
    def writer(name: str) -> None:
        append_events(database, 20, user=name)

    threads = [threading.Thread(target=writer, args=(f"user{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = verify(database)
    assert report.intact, report.problems
    assert report.rows == 120 and report.head_seq == 120


def test_a_deleted_row_is_detected_naming_the_row_after_it(database: Database) -> None:
    append_events(database, 6)
    (id3, _), (id4, _) = rows(database)[2], rows(database)[3]
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("DELETE FROM audit_events WHERE id = ?", (id3,))
    report = verify(database)
    assert not report.intact
    assert report.first_problem() == f"row id {id4} (seq 4): seq 3 missing: rows before it were deleted"


def test_many_deleted_rows_are_detected(database: Database) -> None:
    append_events(database, 50)
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("DELETE FROM audit_events WHERE seq BETWEEN 10 AND 44")  # 35 rows
    report = verify(database)
    assert report.first_problem().endswith("(seq 45): seq 10..44 missing: rows before it were deleted")


def test_an_inserted_row_is_detected(database: Database) -> None:
    append_events(database, 3)
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("INSERT INTO audit_events (at, username, action, target, detail, prev_hmac) "
                    "VALUES ('2026-12-01 10:00:00.000000', 'mallory', 'login', '', '', '')")
        forged_id = raw.execute("SELECT max(id) FROM audit_events").fetchone()[0]
    report = verify(database)
    assert report.first_problem() == f"row id {forged_id}: is not in the chain (inserted directly in the database)"


def test_an_inserted_row_with_a_made_up_link_is_detected(database: Database) -> None:
    append_events(database, 3)
    with sqlite3.connect(db_file(database)) as raw:
        prev = raw.execute("SELECT hmac FROM audit_events WHERE seq = 3").fetchone()[0]
        raw.execute("INSERT INTO audit_events (at, username, action, target, detail, seq, prev_hmac, hmac) "
                    "VALUES ('2026-12-01 10:00:00.000000', 'mallory', 'login', '', '', 4, ?, ?)", (prev, "0" * 64))
    report = verify(database)
    assert report.first_problem().endswith("(seq 4): content does not match its HMAC (edited or forged)")


def test_an_edited_row_is_detected_naming_it(database: Database) -> None:
    append_events(database, 4)
    edited_id = rows(database)[1][0]
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("UPDATE audit_events SET username = 'someone-else' WHERE id = ?", (edited_id,))
    report = verify(database)
    assert report.first_problem() == f"row id {edited_id} (seq 2): content does not match its HMAC (edited or forged)"
    assert len(report.problems) == 1


def test_rows_cut_off_the_end_are_detected_against_a_noted_head(database: Database) -> None:
    append_events(database, 5)
    head = verify(database)
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("DELETE FROM audit_events WHERE seq >= 4")
    assert verify(database).intact  # a shorter chain is still a chain ...
    report = verify(database, expected_head=(head.head_seq, head.head_hmac))
    assert "rows were cut off the end" in report.first_problem()  # ... but not the one noted


def test_rows_cut_off_the_end_are_detected_by_default_against_the_head_log(tmp_path: Path) -> None:
    head_log = tmp_path / audit.HEAD_LOG_NAME
    db = open_database(f"sqlite:///{tmp_path / 'logged.db'}")
    audit.use_key(db, SECRET, head_log=head_log)
    try:
        append_events(db, 5)
        with pytest.raises(RuntimeError), db.session() as session:  # a rolled-back action notes nothing
            accounts.record(session, username="ada", action="study.delete", target="gone")
            audit.count(session)  # the row is written into the transaction ...
            raise RuntimeError("the delete failed")  # ... which then rolls back
        lines = head_log.read_text().splitlines()
        assert [int(line.split(":")[0]) for line in lines] == [1, 2, 3, 4, 5]
        report = verify(db)
        assert report.intact and (report.head_seq, report.head_hmac) == audit.noted_head(head_log)
        with sqlite3.connect(db_file(db)) as raw:
            raw.execute("DELETE FROM audit_events WHERE seq >= 4")
        report = verify(db)
        assert not report.intact
        assert report.first_problem().startswith("row id 0 (seq 5): the head noted earlier is gone: rows were cut off")
        with sqlite3.connect(db_file(db)) as raw:  # a forged row 4 and 5 under another key does not pass either
            raw.execute("DELETE FROM audit_events")
        assert not verify(db).intact
    finally:
        db.dispose()


def test_the_head_log_reads_its_highest_head_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / audit.HEAD_LOG_NAME
    assert audit.noted_head(path) is None
    path.write_text(f"7:{'a' * 64}\n9:{'b' * 64}\n8:{'c' * 64}\n10:{'d' * 20}")  # writers racing, a torn end
    assert audit.noted_head(path) == (9, "b" * 64)


def test_another_key_does_not_verify(database: Database, tmp_path: Path) -> None:
    append_events(database, 2)
    audit.use_key(database, "another-secret-0123456789abcdefghijklmn")
    assert not verify(database).intact


def test_rows_from_before_the_chain_are_counted_not_failed(database: Database) -> None:
    with sqlite3.connect(db_file(database)) as raw:
        raw.execute("INSERT INTO audit_events (at, username, action, target, detail, prev_hmac) "
                    "VALUES ('2026-11-01 10:00:00.000000', 'ada', 'login', '', '', '')")
    append_events(database, 2)
    report = verify(database)
    assert report.intact and report.before_chain == 1 and report.rows == 2


def test_search_filters_by_user_action_and_date(database: Database) -> None:
    append_events(database, 2, user="ada")
    with database.session() as session:
        accounts.record(session, username="bo", action="user.create", target="cy")
        accounts.record(session, username="bo", action="download", target="s1", detail="ct.nii.gz")
    with database.session() as session:
        assert [e.action for e in audit.search(session, username="bo")] == ["download", "user.create"]
        assert [e.username for e in audit.search(session, action="user")] == ["bo"]
        assert audit.search(session, date_from=__import__("datetime").datetime(2100, 1, 1)) == []
        assert len(list(audit.iter_events(session))) == 4


def test_an_event_is_written_with_the_commit_and_dropped_with_a_rollback(database: Database) -> None:
    """The row is written inside the commit (so an audited read takes SQLite's write lock only
    while committing), and an action that rolls back leaves no record."""
    with database.session() as session:
        before = audit.count(session)
    with database.session() as session:
        audit.append(session, username="ann", action="study.view", target="s1")
        with database.engine.connect() as other:  # another connection sees nothing yet
            assert other.exec_driver_sql("SELECT count(*) FROM audit_events").scalar() == before
    with pytest.raises(RuntimeError), database.session() as session:
        audit.append(session, username="ann", action="delete", target="s2")
        raise RuntimeError("the delete failed")
    with database.session() as session:
        assert [e.target for e in audit.search(session, username="ann")] == ["s1"]
        audit.append(session, username="ann", action="study.list")
        assert audit.count(session) == before + 2  # readers in the same session see their own event
    with database.session() as session:
        assert audit.verify(session).intact
