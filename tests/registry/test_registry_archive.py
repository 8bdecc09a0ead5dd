"""Export of a version to one .zip and import into another registry, including hostile and
damaged archives."""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from registry_helpers import make_card

from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, sha256_file
from spineseg.registry import Registry


@pytest.fixture
def exported(registry: Registry, weights: Path, tmp_path: Path) -> Path:
    registry.register(weights, make_card("base"))
    registry.register(weights, make_card("child", parent_id="base", metrics={"val_dice": 0.9}))
    return registry.export("child", tmp_path / "child.zip")


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_export_import_round_trip_keeps_card_and_hash(registry: Registry, exported: Path, tmp_path: Path) -> None:
    assert sorted(_members(exported)) == [CARD_FILE, WEIGHTS_FILE]
    original = registry.get("child")

    second = Registry(tmp_path / "elsewhere")
    imported = second.import_file(exported)

    assert imported.id == "child"
    assert imported.card == original.card  # created, parent, metrics, hash all kept
    assert sha256_file(imported.weights_path) == original.card.weights_sha256
    assert imported.weights_path.read_bytes() == original.weights_path.read_bytes()
    assert not imported.is_production and second.production() is None
    assert second.list_versions()[0].card.parent_id == "base"


def test_import_can_promote(exported: Path, tmp_path: Path) -> None:
    second = Registry(tmp_path / "elsewhere")
    second.import_file(exported, make_production=True, actor="ops")
    assert second.production().id == "child"
    assert [(e.action, e.actor) for e in second.history()] == [("promote", "ops")]


def test_import_of_an_existing_id_is_refused_and_changes_nothing(
    registry: Registry, exported: Path, other_weights: Path, tmp_path: Path
) -> None:
    second = Registry(tmp_path / "elsewhere")
    kept = second.register(other_weights, make_card("child"))
    with pytest.raises(InputError, match="already exists"):
        second.import_file(exported)
    assert second.get("child").card == kept.card
    assert sha256_file(second.get("child").weights_path) == sha256_file(other_weights)
    with pytest.raises(InputError, match="already exists"):
        registry.import_file(exported)


HostileBuilder = Callable[[dict[str, bytes]], list[tuple[str, bytes]]]

HOSTILE_ARCHIVES: dict[str, tuple[HostileBuilder, str]] = {
    "path traversal member": (
        lambda m: [(CARD_FILE, m[CARD_FILE]), (WEIGHTS_FILE, m[WEIGHTS_FILE]), ("../evil.txt", b"x")],
        "unexpected member",
    ),
    "nested weights path": (
        lambda m: [(CARD_FILE, m[CARD_FILE]), ("sub/" + WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "unexpected member",
    ),
    "absolute member": (
        lambda m: [(CARD_FILE, m[CARD_FILE]), ("/" + WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "unexpected member",
    ),
    "missing weights": (lambda m: [(CARD_FILE, m[CARD_FILE])], "lacks"),
    "duplicated card": (
        lambda m: [(CARD_FILE, m[CARD_FILE]), (CARD_FILE, m[CARD_FILE]), (WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "twice",
    ),
    "card not json": (lambda m: [(CARD_FILE, b"{oops"), (WEIGHTS_FILE, m[WEIGHTS_FILE])], "not valid JSON"),
    "card without hash": (
        lambda m: [(CARD_FILE, _edit_card(m, weights_sha256=None)), (WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "records no weights_sha256",
    ),
    "card with traversal id": (
        lambda m: [(CARD_FILE, _edit_card(m, id="../../etc")), (WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "not a valid version id",
    ),
    "card with malformed spacing": (
        lambda m: [(CARD_FILE, _edit_card(m, spacing_mm=3)), (WEIGHTS_FILE, m[WEIGHTS_FILE])],
        "malformed fields",
    ),
}


def _edit_card(members: dict[str, bytes], **changes: object) -> bytes:
    data = json.loads(members[CARD_FILE])
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize("case", sorted(HOSTILE_ARCHIVES))
def test_hostile_archives_are_refused(exported: Path, tmp_path: Path, case: str) -> None:
    build, message = HOSTILE_ARCHIVES[case]
    archive = _write_zip(tmp_path / "hostile.zip", build(_members(exported)))
    target = Registry(tmp_path / "elsewhere")
    with pytest.raises(InputError, match=message):
        target.import_file(archive)
    assert target.version_ids() == []
    assert [p.name for p in (target.root / "versions").iterdir()] == []  # staging removed
    assert not (tmp_path / "evil.txt").exists()


def test_non_zip_and_missing_files_are_refused(tmp_path: Path) -> None:
    target = Registry(tmp_path / "elsewhere")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InputError, match="not a readable model archive"):
        target.import_file(junk)
    with pytest.raises(InputError, match="no such file"):
        target.import_file(tmp_path / "absent.zip")


def test_archive_with_altered_weights_is_refused(exported: Path, tmp_path: Path) -> None:
    members = _members(exported)
    weights = bytearray(members[WEIGHTS_FILE])
    weights[-3] ^= 0xFF
    archive = _write_zip(tmp_path / "altered.zip", [(CARD_FILE, members[CARD_FILE]), (WEIGHTS_FILE, bytes(weights))])
    target = Registry(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match="tampered or corrupt"):
        target.import_file(archive)
    assert target.version_ids() == []


def test_export_refuses_to_overwrite_unless_asked(registry: Registry, exported: Path) -> None:
    before = exported.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        registry.export("base", exported)
    assert exported.read_bytes() == before
    registry.export("base", exported, overwrite=True)
    assert json.loads(_members(exported)[CARD_FILE])["id"] == "base"


def test_export_of_tampered_or_unknown_version_writes_nothing(
    registry: Registry, weights: Path, tmp_path: Path
) -> None:
    registry.register(weights, make_card("a"))
    stored = registry.root / "versions" / "a" / WEIGHTS_FILE
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="weights of version a"):
        registry.export("a", tmp_path / "a.zip")
    with pytest.raises(ModelNotFoundError):
        registry.export("ghost", tmp_path / "ghost.zip")
    assert sorted(p.name for p in tmp_path.glob("*.zip")) == []
    assert list(tmp_path.glob(".tmp-*")) == []
