from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from spineseg.model.card import sha256_file
from spineseg.model.train import TrainConfig, TrainEvent
from spineseg.registry import open_registry
from spineseg.services.training import train_version
from tests.conftest import TINY_ARCHITECTURE

TINY = {"epochs": 2, "steps_per_epoch": 10, "batch_size": 4, "patch_size": 48, "lr": 1e-2, "warmup_steps": 2,
        "architecture": TINY_ARCHITECTURE}


def test_loss_decreases_and_versions_chain_parents(phantom_dataset: Path, empty_data_dir: Path) -> None:
    losses: list[float] = []
    epochs: list[TrainEvent] = []

    def collect(event: TrainEvent) -> None:
        (losses if event.kind == "step" else epochs).append(event.loss if event.kind == "step" else event)

    registry = open_registry()
    first, _result = train_version(phantom_dataset, "scratch", TrainConfig(**TINY), out_version="first",
                                  registry=registry, callback=collect)
    assert len(losses) == 20 and len(epochs) == 2
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert first.id == "first" and first.card.parent_id is None
    assert first.card.weights_sha256 == sha256_file(first.path / "weights.safetensors")
    assert 0.0 <= first.card.metrics["val_dice"] <= 1.0
    assert first.card.dataset["split"] == {"P0": "train", "P1": "train", "P2": "val"}
    assert registry.production() is None  # a new version is never production by itself

    coarse = TrainConfig(**TINY | {"epochs": 1, "coarse_plane_prob": 1.0})  # every sample through coarsen_plane
    second, _ = train_version(phantom_dataset, "first", coarse, out_version="second", registry=registry)
    assert second.card.parent_id == "first"
    assert second.card.hyperparameters["coarse_plane_prob"] == 1.0
    assert second.card.architecture == first.card.architecture
    assert [v.id for v in registry.list_versions()] == ["first", "second"]


def test_sigterm_leaves_the_registry_untouched_and_the_run_resumable(
    phantom_dataset: Path, empty_data_dir: Path, tmp_path: Path
) -> None:
    registry = open_registry()
    checkpoints = tmp_path / "ckpt"

    def terminate_in_second_epoch(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 13:
            os.kill(os.getpid(), signal.SIGTERM)

    config = TrainConfig(**TINY)
    version, result = train_version(phantom_dataset, "scratch", config, registry=registry,
                                    checkpoint_dir=checkpoints, callback=terminate_in_second_epoch)
    assert version is None and result.interrupted
    assert registry.list_versions() == []
    assert (checkpoints / "checkpoint.pt").exists()
    resumed, result = train_version(phantom_dataset, "scratch", config, registry=registry,
                                    checkpoint_dir=checkpoints, resume=True, out_version="resumed")
    assert resumed is not None and resumed.id == "resumed"
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_tight_crop_augmentation_leaves_air_around_the_spine(phantom_dataset: Path) -> None:
    from spineseg.model.card import ModelCard
    from spineseg.model.dataset import load_dataset
    from spineseg.model.train import SliceSampler

    _, cases = load_dataset(phantom_dataset)
    config = TrainConfig(patch_size=96, tight_crop_prob=1.0, spine_slice_fraction=1.0)
    sampler = SliceSampler([c for c in cases if c.split == "train"], ModelCard(id="", architecture={}), config,
                           np.random.default_rng(0))
    cropped = 0
    for _ in range(20):
        image, label = sampler.sample()
        if not label.any():
            continue
        ys, xs = np.nonzero(label[0])
        outside = np.ones(label.shape[1:], dtype=bool)
        # The box is the spine's extent plus a margin below 30 voxels (the box may also cut 4 voxels in).
        outside[max(ys.min() - 34, 0): ys.max() + 35, max(xs.min() - 34, 0): xs.max() + 35] = False
        if outside.any():
            assert image[:, outside].max() == 0.0
            cropped += 1
    assert cropped > 5
