"""``spineseg users disable|enable|reset-password|delete``, ``spineseg tokens list|revoke``
and ``spineseg audit verify`` through ``main()``."""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

import pytest

from spineseg.cli.main import main
from spineseg.config import Settings
from spineseg.store import accounts, audit
from spineseg.store.database import open_database

SECRET = "cli-test-secret-0123456789abcdefghijklmn"
PASSWORD = "s3cret-enough-password"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPINESEG_SECRET_KEY", SECRET)
    monkeypatch.setattr(sys, "argv", ["spineseg"])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check(fn):
    database = open_database(Settings.from_env().sqlalchemy_url)
    audit.use_key(database, SECRET)
    try:
        with database.session() as session:
            return fn(session)
    finally:
        database.dispose()


def test_disable_enable_reset_and_delete(data_dir: Path, monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, "users", "create", "--username", "ada", "--role", "viewer",
               "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    assert run(monkeypatch, capsys, "users", "disable", "ada")[1] == "disabled ada\n"
    assert "ada\tviewer (disabled)" in run(monkeypatch, capsys, "users", "list")[1]
    assert check(lambda s: accounts.authenticate(s, username="ada", password=PASSWORD)) is None
    assert run(monkeypatch, capsys, "users", "enable", "ada")[0] == 0
    assert run(monkeypatch, capsys, "users", "reset-password", "ada", "--password-stdin",
               stdin="a brand new password\n")[1] == "new password set for ada\n"
    assert check(lambda s: accounts.authenticate(s, username="ada", password="a brand new password")) is not None
    code, _out, err = run(monkeypatch, capsys, "users", "reset-password", "ada", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 8 characters" in err
    assert run(monkeypatch, capsys, "users", "delete", "ada")[1] == "deleted ada\n"
    code, _out, err = run(monkeypatch, capsys, "users", "disable", "ada")
    assert code == 2 and "no user named 'ada'" in err
    actions = check(lambda s: [(e.username, e.action) for e in reversed(audit.search(s))])
    assert actions == [("cli", "user.create"), ("cli", "user.change"), ("cli", "user.change"),
                       ("cli", "user.password_reset"), ("cli", "user.delete")]


def test_tokens_list_and_revoke(data_dir: Path, monkeypatch, capsys) -> None:
    run(monkeypatch, capsys, "users", "create", "--username", "bo", "--role", "admin", "--password-stdin",
        stdin=PASSWORD + "\n")
    secret = run(monkeypatch, capsys, "tokens", "create", "--username", "bo", "--name", "nightly", "--days", "7")[1]
    secret = secret.strip()
    code, out, _ = run(monkeypatch, capsys, "tokens", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split("\t")[:3] == ["id", "user", "name"]
    token_id, user, name, prefix, *_rest, state = row.split("\t")
    assert (user, name, state) == ("bo", "nightly", "active") and secret.startswith(prefix)
    assert check(lambda s: accounts.user_for_token(s, token=secret).username) == "bo"
    assert run(monkeypatch, capsys, "tokens", "revoke", token_id)[1].startswith(f"revoked token {token_id} (bo, ")
    assert check(lambda s: accounts.user_for_token(s, token=secret)) is None
    assert run(monkeypatch, capsys, "tokens", "list", "--username", "bo")[1].splitlines()[1].endswith("\trevoked")
    code, _out, err = run(monkeypatch, capsys, "tokens", "revoke", "4242")
    assert code == 2 and "no token with id 4242" in err
    code, _out, err = run(monkeypatch, capsys, "tokens", "create", "--username", "bo", "--days", "0")
    assert code == 2 and "days" in err


def test_audit_verify_exit_codes(data_dir: Path, monkeypatch, capsys) -> None:
    run(monkeypatch, capsys, "users", "create", "--username", "cy", "--role", "viewer", "--password-stdin",
        stdin=PASSWORD + "\n")
    for _ in range(3):
        run(monkeypatch, capsys, "users", "disable", "cy")
    code, out, _ = run(monkeypatch, capsys, "audit", "verify")
    assert code == 0 and out.startswith("audit chain intact: 4 rows")
    head = out.splitlines()[1].removeprefix("head: ")
    assert out.splitlines()[2] == "the head noted in audit-heads.log (seq 4) is in the chain"
    assert run(monkeypatch, capsys, "audit", "verify", "--expect-head", head)[0] == 0
    with sqlite3.connect(data_dir / "spineseg.db") as raw:
        raw.execute("DELETE FROM audit_events WHERE seq = 4")
    for extra in ((), ("--expect-head", head)):  # by default against the head log, or a head noted elsewhere
        code, out, _ = run(monkeypatch, capsys, "audit", "verify", *extra)
        assert code == 1 and "rows were cut off the end" in out
    with sqlite3.connect(data_dir / "spineseg.db") as raw:
        row_id = raw.execute("SELECT id FROM audit_events WHERE seq = 3").fetchone()[0]
        raw.execute("DELETE FROM audit_events WHERE seq = 2")
    code, out, _ = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1
    first = out.splitlines()[0]
    assert first == f"audit chain broken: row id {row_id} (seq 3): seq 2 missing: rows before it were deleted"
    assert "(seq 4): the head noted earlier is gone" in out.splitlines()[1]
    code, _out, err = run(monkeypatch, capsys, "audit", "verify", "--expect-head", "nonsense")
    assert code == 2 and "--expect-head" in err
