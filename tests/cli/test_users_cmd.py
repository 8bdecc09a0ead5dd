"""``spineseg users create`` / ``users list`` / ``tokens create`` through ``main()``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from spineseg.cli.main import main
from spineseg.config import Settings
from spineseg.store import accounts
from spineseg.store.database import open_database


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_create_user_from_stdin_then_token_authenticates(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-enough-password\n"))
    assert main(["users", "create", "--username", "ada", "--role", "admin", "--password-stdin"]) == 0
    assert "created user ada (admin)" in capsys.readouterr().out
    assert main(["tokens", "create", "--username", "ada"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sst_")
    assert main(["users", "list"]) == 0
    assert "ada\tadmin" in capsys.readouterr().out

    database = open_database(Settings.from_env().sqlalchemy_url)
    with database.session() as session:
        assert accounts.authenticate(session, username="ada", password="s3cret-enough-password") is not None
        assert accounts.user_for_token(session, token=token).username == "ada"


def test_short_password_and_unknown_user_exit_2_with_the_reason(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["users", "create", "--username", "bob", "--role", "viewer", "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["tokens", "create", "--username", "nobody"]) == 2
    assert "no user named 'nobody'" in capsys.readouterr().err
