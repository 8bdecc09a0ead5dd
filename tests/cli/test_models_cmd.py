"""``spineseg models ...`` through the real entry point, on a data folder in ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spineseg.cli.main import main
from spineseg.cli.models_cmd import cli_actor
from spineseg.config import Settings
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard
from spineseg.registry import Registry, lookup
from spineseg.store import audit
from spineseg.store.database import open_database


def _tiny_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_file(torch.nn.Conv2d(3, 2, 3).state_dict(), str(path))
    return path


def _card(version_id: str, parent_id: str | None = None, val_dice: float | None = None) -> ModelCard:
    metrics = {} if val_dice is None else {"val_dice": val_dice}
    return ModelCard(id=version_id, architecture={"name": "tests.TinyConv"}, parent_id=parent_id, metrics=metrics)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder in the environment, and no shipped default model."""
    folder = tmp_path / "data"
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(folder))
    monkeypatch.setenv("SPINESEG_PROMOTION_APPROVAL", "single")  # one person promotes (the two-person test sets it)
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: tmp_path / "no_default_model")
    return folder


@pytest.fixture
def two_versions(data_dir: Path, tmp_path: Path) -> Registry:
    registry = Registry(Settings.from_env().registry_dir)
    registry.register(_tiny_weights(tmp_path / "a.safetensors", 0), _card("a", val_dice=0.81))
    registry.register(_tiny_weights(tmp_path / "b.safetensors", 1), _card("b", parent_id="a"))
    return registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(out: str) -> dict[str, list[str]]:
    """Rows of the ``models list`` table keyed by id (header dropped)."""
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["ID", "PARENT"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_list_on_empty_data_dir_shows_the_shipped_default_as_production(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = tmp_path / "default_model"
    shipped.mkdir()
    _tiny_weights(shipped / WEIGHTS_FILE, 7)
    (shipped / CARD_FILE).write_text(_card("default-v1", val_dice=0.87).to_json())
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: shipped)

    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = _table(out)
    assert list(rows) == ["default-v1"]
    assert rows["default-v1"][1] == "-"  # no parent
    assert "0.870" in rows["default-v1"]
    assert rows["default-v1"][-1] == "*"
    assert (data_dir / "models" / "versions" / "default-v1" / WEIGHTS_FILE).is_file()


def test_list_on_empty_data_dir_without_default_says_how_to_get_a_model(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "no model versions" in out and "spineseg models import" in out


def test_promote_rollback_show_and_history(two_versions: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    rows = _table(out)
    assert list(rows) == ["a", "b"]
    assert rows["b"][1] == "a"
    assert "0.810" in rows["a"] and rows["b"][4] == "-"  # id, parent, date, time, dice
    assert rows["a"][-1] != "*" and rows["b"][-1] != "*"

    assert run(capsys, "promote", "a")[1] == "production: none -> a\n"
    code, _, err = run(capsys, "promote", "b")  # b was never validated
    assert code == 2 and "b has no validation figures" in err and "(--force)" in err
    assert two_versions.production_id() == "a"
    assert run(capsys, "promote", "b", "--force")[1] == "note: b has no validation Dice: it was never validated " \
        "(its dataset had no validation patient)\nproduction: a -> b\n"
    assert _table(run(capsys, "list")[1])["b"][-1] == "*"
    assert run(capsys, "rollback")[1] == "rolled back production: b -> a\n"
    assert two_versions.production().id == "a"

    code, _, err = run(capsys, "rollback")
    assert code == 2 and "nothing to roll back to" in err

    code, out, _ = run(capsys, "show", "b")
    assert code == 0
    assert json.loads(out) == json.loads(two_versions.get("b").card.to_json())

    code, out, _ = run(capsys, "history")
    lines = out.strip().splitlines()
    assert [line.split()[2:] for line in lines[1:]] == [
        ["promote", "a", "-", cli_actor()],
        ["promote", "b", "a", cli_actor()],
        ["rollback", "a", "b", cli_actor()],
    ]
    database = open_database(Settings.from_env().sqlalchemy_url)  # the audit chain has them too
    with database.session() as session:
        rows = [(e.action, e.target, e.username, e.detail) for e in reversed(audit.search(session, action="model"))]
    database.dispose()
    assert [r[:3] for r in rows] == [("model.promote", "a", cli_actor()), ("model.promote", "b", cli_actor()),
                                     ("model.rollback", "a", cli_actor())]
    assert rows[0][3].startswith("a: Dice 0.8100") and "without validation figures" in rows[1][3]
    assert rows[2][3].startswith("back to a: Dice 0.8100")


def test_add_shipped_brings_a_newer_default_into_a_registry_of_an_older_release(
    two_versions: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    two_versions.promote("a")
    shipped = tmp_path / "default_model"
    (shipped / "predecessors" / "default-v1").mkdir(parents=True)
    _tiny_weights(shipped / WEIGHTS_FILE, 8)
    (shipped / CARD_FILE).write_text(_card("default-v2").to_json())
    _tiny_weights(shipped / "predecessors" / "default-v1" / WEIGHTS_FILE, 7)
    (shipped / "predecessors" / "default-v1" / CARD_FILE).write_text(_card("default-v1").to_json())
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: shipped)

    code, out, _ = run(capsys, "add-shipped")
    assert code == 0 and "added default-v1" in out and "added default-v2" in out
    assert two_versions.version_ids() == ["a", "b", "default-v1", "default-v2"]
    assert two_versions.production_id() == "a"  # the users' choice stands
    code, out, _ = run(capsys, "add-shipped")
    assert code == 0 and "already holds" in out and len(two_versions.version_ids()) == 4


def test_add_shipped_without_a_shipped_default_says_so(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "add-shipped")
    assert code != 0 and "ships no default model" in err


def test_export_then_import_into_another_data_dir(
    two_versions: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "b.zip"
    code, out, _ = run(capsys, "export", "b", "-o", str(archive))
    assert code == 0 and archive.is_file() and str(archive) in out
    code, _, err = run(capsys, "export", "b", "-o", str(archive))
    assert code == 2 and "already exists" in err
    assert run(capsys, "export", "a", "-o", str(archive), "--force")[0] == 0
    run(capsys, "export", "b", "-o", str(archive), "--force")

    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path / "second_data"))
    code, out, _ = run(capsys, "import", str(archive), "--promote")
    assert code == 0 and out == "imported b (now production)\n"
    second = Registry(Settings.from_env().registry_dir)
    assert second.production().card == two_versions.get("b").card

    code, _, err = run(capsys, "import", str(archive))
    assert code == 2 and "already exists" in err


def test_errors_are_one_line_with_exit_code_2(
    two_versions: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "show", "ghost")
    assert code == 2 and "known versions: a, b" in err

    weights_a = two_versions.get("a").weights_path
    data = bytearray(weights_a.read_bytes())
    data[-4] ^= 0xFF
    weights_a.write_bytes(bytes(data))
    code, _, err = run(capsys, "promote", "a")
    assert code == 2
    assert err.startswith("error: weights of version a do not match") and err.count("\n") == 1

    code, _, err = run(capsys, "export", "b", "-o", str(tmp_path / "no_such_folder" / "b.zip"))
    assert code == 2 and "folder does not exist" in err

    code, _, err = run(capsys, "import", str(tmp_path / "absent.zip"))
    assert code == 2 and "no such file" in err


def test_two_person_rule_makes_promote_a_proposal(two_versions: Registry, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 28 item 5: under the default two-person rule the CLI no longer changes production
    alone; it proposes, as a researcher does on the page, and an admin approves."""
    from spineseg.services.promotions import approve, pending_proposals

    monkeypatch.setenv("SPINESEG_PROMOTION_APPROVAL", "two-person")
    code, out, _ = run(capsys, "promote", "a")
    assert code == 0 and "proposed a (proposal 1); production stays none" in out
    assert two_versions.production_id() is None
    code, _, err = run(capsys, "promote", "a")
    assert code == 2 and "already proposed (proposal 1" in err
    code, _, err = run(capsys, "promote", "b")  # the checks still come first
    assert code == 2 and "(--force)" in err

    archive = tmp_path / "b.zip"
    assert run(capsys, "export", "b", "-o", str(archive))[0] == 0
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path / "second_data"))
    code, out, err = run(capsys, "import", str(archive), "--promote")  # imported; b unvalidated: not proposed
    assert (code, out) == (2, "imported b\n") and "b has no validation figures" in err
    assert Registry(Settings.from_env().registry_dir).production_id() is None
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path / "data"))

    database = open_database(Settings.from_env().sqlalchemy_url)
    with database.session() as session:
        [proposal] = pending_proposals(session)
        assert (proposal.version_id, proposal.proposed_by) == ("a", cli_actor())
        approve(two_versions, session, proposal.id, actor="ada")
        actions = [(e.action, e.username) for e in reversed(audit.search(session, action="model"))]
    database.dispose()
    assert two_versions.production_id() == "a"
    assert actions == [("model.propose", cli_actor()), ("model.promote", "ada"), ("model.approve", "ada")]
