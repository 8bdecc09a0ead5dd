"""``spineseg serve`` on a data directory it cannot serve: exit 2 with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineseg.cli.main import main
from tests.web.web_helpers import make_settings, register_test_model


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(folder))
    monkeypatch.setenv("SPINESEG_SECRET_KEY", "kP4w-8RzTq1_Ym6Xc3Nb9Lf2Hs7Gd5Ja0Ev")
    return folder

def test_a_database_file_that_is_not_a_database(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data_dir / "spineseg.db").write_bytes(b"this is not SQLite" * 300)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "spineseg.db" in lines[0] and "not a database" in lines[0], err
    assert "Traceback" not in err

def test_a_corrupt_registry_state(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(data_dir)
    register_test_model(settings)
    (settings.registry_dir / "state.json").write_text('{"production_stack": [')
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "state.json" in lines[0] and "corrupt" in lines[0], err
    assert "Traceback" not in err
