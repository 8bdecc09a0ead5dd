"""Registry versions, production pointer and history on real tiny safetensors weights."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from registry_helpers import flip_byte, make_card, write_tiny_weights

from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from spineseg.registry import Registry
from spineseg.registry.version import package_version


def test_register_fills_card_stores_files_and_keeps_parent(registry: Registry, weights: Path) -> None:
    parent = registry.register(weights, make_card("base"))
    caller_card = make_card("child", parent_id="base", metrics={"val_dice": 0.81})
    child = registry.register(weights, caller_card)

    assert child.id == "child" and child.card.id == "child"
    assert child.card.parent_id == parent.id == "base"
    assert child.card.weights_sha256 == sha256_file(weights)
    assert child.card.code_version == package_version() != "unknown"
    created = datetime.fromisoformat(child.card.created)
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert child.card.metrics == {"val_dice": 0.81}
    # Files on disk are the stored card and a byte-identical copy of the weights.
    assert child.path == registry.root / "versions" / "child"
    assert (child.path / WEIGHTS_FILE).read_bytes() == weights.read_bytes()
    assert ModelCard.read(child.path / CARD_FILE) == child.card
    # The caller's card object is left as it was.
    assert caller_card.created is None and caller_card.weights_sha256 is None


def test_register_generates_an_id_from_time_and_weights_hash(registry: Registry, weights: Path) -> None:
    model = registry.register(weights, make_card(""))
    digest = sha256_file(weights)
    assert re.fullmatch(rf"v\d{{8}}-\d{{6}}-{digest[:8]}", model.id)
    assert registry.get(model.id).card.id == model.id


def test_register_refuses_an_existing_id_and_keeps_the_original(
    registry: Registry, weights: Path, other_weights: Path
) -> None:
    first = registry.register(weights, make_card("v1"))
    with pytest.raises(InputError, match="already exists"):
        registry.register(other_weights, make_card("v1"))
    assert registry.get("v1").card.weights_sha256 == first.card.weights_sha256 == sha256_file(weights)
    assert [m.id for m in registry.list_versions()] == ["v1"]


@pytest.mark.parametrize("bad_id", ["../escape", "Upper", ".hidden", "a/b", "-dash", "x" * 65, "sp ace"])
def test_register_refuses_unsafe_ids(registry: Registry, weights: Path, tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(InputError, match="not a valid version id"):
        registry.register(weights, make_card(bad_id))
    assert registry.list_versions() == []
    assert not (tmp_path / "escape").exists()


def test_register_refuses_files_that_are_not_safetensors(registry: Registry, tmp_path: Path) -> None:
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickled)
    with pytest.raises(InputError, match="not a valid safetensors"):
        registry.register(pickled, make_card("pickled"))
    with pytest.raises(InputError, match="not found"):
        registry.register(tmp_path / "missing.safetensors", make_card("missing"))
    assert registry.list_versions() == []


def test_register_refuses_weights_that_do_not_match_the_hash_the_card_records(
    registry: Registry, weights: Path, other_weights: Path
) -> None:
    card = make_card("claimed", weights_sha256=sha256_file(other_weights))
    with pytest.raises(IntegrityError, match="does not match"):
        registry.register(weights, card)
    assert registry.version_ids() == []


def test_list_is_sorted_by_creation_not_by_name(registry: Registry, weights: Path) -> None:
    for version_id in ("zeta", "alpha", "mid"):
        registry.register(weights, make_card(version_id))
    assert [m.id for m in registry.list_versions()] == ["zeta", "alpha", "mid"]


def test_get_unknown_id_names_the_known_ones(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("alpha"))
    registry.register(weights, make_card("beta"))
    with pytest.raises(ModelNotFoundError, match=r"'nope'.*alpha, beta"):
        registry.get("nope")
    with pytest.raises(ModelNotFoundError, match="known versions"):
        registry.get("../versions")


def test_promote_and_rollback_round_trip_with_history(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"))
    registry.register(weights, make_card("b", parent_id="a"))
    assert registry.production() is None

    registry.promote("a", actor="alice")
    promoted = registry.promote("b", actor="bob")
    assert promoted.is_production
    assert registry.production().id == "b"
    assert {m.id: m.is_production for m in registry.list_versions()} == {"a": False, "b": True}

    back = registry.rollback(actor="carol")
    assert back.id == "a"
    # A fresh Registry object (another process) sees the same persisted pointer.
    assert Registry(registry.root).production().id == "a"
    with pytest.raises(InputError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.production().id == "a"

    events = registry.history()
    assert [(e.action, e.version_id, e.previous_id, e.actor) for e in events] == [
        ("promote", "a", None, "alice"),
        ("promote", "b", "a", "bob"),
        ("rollback", "a", "b", "carol"),
    ]
    times = [datetime.fromisoformat(e.at) for e in events]
    assert times == sorted(times)


def test_repeated_rollbacks_walk_back_through_production_versions(registry: Registry, weights: Path) -> None:
    for version_id in ("a", "b", "c"):
        registry.register(weights, make_card(version_id), make_production=True)
    assert registry.production().id == "c"
    assert registry.rollback().id == "b"
    assert registry.rollback().id == "a"
    with pytest.raises(InputError, match="nothing to roll back to"):
        registry.rollback()


def test_promoting_the_production_version_again_records_nothing(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"), make_production=True, actor="trainer")
    registry.promote("a")
    assert [(e.action, e.actor) for e in registry.history()] == [("promote", "trainer")]


def test_promote_unknown_version_is_refused(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"))
    with pytest.raises(ModelNotFoundError, match="known versions: a"):
        registry.promote("ghost")
    assert registry.production() is None and registry.history() == []


def test_tampered_weights_are_refused_by_get_production_and_promote(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"), make_production=True)
    registry.register(weights, make_card("b"))
    assert registry.get("a").id == "a"  # verified once, now cached
    weights_a = registry.root / "versions" / "a" / WEIGHTS_FILE
    before = weights_a.stat()
    flip_byte(weights_a)
    # Restoring the mtime does not hide the change from the cache (ctime still moves).
    os.utime(weights_a, ns=(before.st_atime_ns, before.st_mtime_ns))

    expected = r"weights of version a do not match their recorded sha256 \(tampered or corrupt\)"
    for reader in (registry, Registry(registry.root)):
        with pytest.raises(IntegrityError, match=expected) as caught:
            reader.get("a")
        assert str(weights_a) in str(caught.value)
        with pytest.raises(IntegrityError, match=expected):
            reader.production()
    registry.promote("b")
    with pytest.raises(IntegrityError, match=expected):
        registry.rollback()
    assert registry.production().id == "b"


def test_leftover_staging_folder_from_a_crash_is_ignored_then_cleaned(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"))
    # What a process killed between copying the weights and renaming the folder leaves behind.
    leftover = registry.root / "versions" / ".tmp-register-crashed"
    leftover.mkdir()
    (leftover / WEIGHTS_FILE).write_bytes(weights.read_bytes()[:100])
    (leftover / CARD_FILE).write_text(make_card(".tmp-register-crashed").to_json())

    assert [m.id for m in registry.list_versions()] == ["a"]
    with pytest.raises(ModelNotFoundError):
        registry.get(".tmp-register-crashed")
    registry.register(weights, make_card("b"))
    assert not leftover.exists()
    assert [m.id for m in registry.list_versions()] == ["a", "b"]


def test_corrupt_state_file_is_reported_with_its_path(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"), make_production=True)
    registry.state_path.write_text("{ not json")
    with pytest.raises(IntegrityError, match=re.escape(str(registry.state_path))):
        registry.production()


def test_state_file_is_plain_json_naming_production(registry: Registry, weights: Path) -> None:
    registry.register(weights, make_card("a"), make_production=True)
    state = json.loads(registry.state_path.read_text())
    assert state["production_stack"] == ["a"]
    assert state["history"][0]["version_id"] == "a"


def test_concurrent_writers_do_not_lose_promotions(tmp_path: Path) -> None:
    """Two writers with their own Registry objects (own lock file handles, as two processes
    would have) register-and-promote in parallel; the history must form one unbroken chain."""
    root = tmp_path / "models"
    per_writer = 8
    sources = [write_tiny_weights(tmp_path / f"w{i}.safetensors", seed=i) for i in range(2)]
    failures: list[BaseException] = []

    def writer(index: int) -> None:
        own = Registry(root)
        try:
            for n in range(per_writer):
                own.register(sources[index], make_card(f"w{index}-{n}"), make_production=True)
        except BaseException as exc:  # collected and re-raised in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    registry = Registry(root)
    events = registry.history()
    assert len(events) == 2 * per_writer == len(registry.version_ids())
    for earlier, later in itertools.pairwise(events):
        assert later.previous_id == earlier.version_id
    assert registry.production().id == events[-1].version_id
