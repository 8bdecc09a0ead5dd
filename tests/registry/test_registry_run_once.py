"""A training run registers at most one version: registering a card that names its
``training_run_id`` again (a retry after a crash, a second trainer of the same run) returns the
version that run already has, also when threads or processes race."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from registry_helpers import make_card, write_tiny_weights

from spineseg.registry import Registry
from spineseg.registry.version import run_version_id

RUN_ID = "0123456789abcdef0123456789abcdef"


def run_card() -> object:
    return make_card(run_version_id(RUN_ID), training_run_id=RUN_ID)


def test_registering_a_run_twice_returns_its_first_version(registry: Registry, weights: Path,
                                                           other_weights: Path) -> None:
    first = registry.register(weights, run_card())
    again = registry.register(other_weights, run_card())  # a retry that trained different weights
    assert first.id == again.id == f"run-{RUN_ID}"
    assert again.card.weights_sha256 == first.card.weights_sha256
    assert registry.version_ids() == [f"run-{RUN_ID}"]
    assert registry.version_of_training_run(RUN_ID).id == first.id
    assert registry.version_of_training_run("f" * 32) is None


def test_the_run_check_holds_for_a_version_under_another_id(registry: Registry, weights: Path,
                                                            other_weights: Path) -> None:
    first = registry.register(weights, make_card("", training_run_id=RUN_ID))  # generated id
    assert registry.register(other_weights, run_card()).id == first.id
    assert registry.version_ids() == [first.id]


def test_cards_without_a_run_are_registered_as_before(registry: Registry, weights: Path) -> None:
    a = registry.register(weights, make_card(""))
    b = registry.register(weights, make_card("named"))
    assert a.id != b.id and a.card.training_run_id is None and len(registry.version_ids()) == 2


def test_threads_racing_on_one_run_register_one_version(tmp_path: Path) -> None:
    root = tmp_path / "models"
    paths = [write_tiny_weights(tmp_path / f"w{i}.safetensors", seed=i) for i in range(6)]
    barrier = threading.Barrier(len(paths))
    ids: list[str] = []

    def register(path: Path) -> None:
        registry = Registry(root)  # each its own lock file description, as in separate processes
        barrier.wait(timeout=10)
        ids.append(registry.register(path, run_card()).id)

    threads = [threading.Thread(target=register, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert ids == [f"run-{RUN_ID}"] * len(paths)
    assert Registry(root).version_ids() == [f"run-{RUN_ID}"]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from spineseg.model.card import ModelCard
    from spineseg.registry import Registry
    root, weights, go, run_id = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    card = ModelCard(id="run-" + run_id, architecture={"name": "tests.TinyConv"}, training_run_id=run_id)
    while not go.exists():
        time.sleep(0.005)
    print(Registry(root).register(weights, card).id)
""")


@pytest.mark.slow
def test_processes_racing_on_one_run_register_one_version(tmp_path: Path) -> None:
    root, go = tmp_path / "models", tmp_path / "go"
    paths = [write_tiny_weights(tmp_path / f"p{i}.safetensors", seed=i) for i in range(4)]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(root), str(path), str(go), RUN_ID],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in paths]
    time.sleep(3.0)  # let every interpreter reach its wait (importing torch takes a while)
    go.touch()
    outputs = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        outputs.append(out.strip())
    assert outputs == [f"run-{RUN_ID}"] * len(paths)
    assert Registry(root).version_ids() == [f"run-{RUN_ID}"]
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]  # no staging left
