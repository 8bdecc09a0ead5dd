"""Train a new registry version from a dataset, starting from a saved version or scratch."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spineseg.errors import InputError
from spineseg.model.inference import LoadedModel
from spineseg.model.network import save_weights
from spineseg.model.train import TrainConfig, TrainEvent, TrainResult, train
from spineseg.registry import RegisteredModel, Registry, open_registry
from spineseg.registry.version import run_version_id

log = logging.getLogger(__name__)

SCRATCH = "scratch"


def load_base(registry: Registry, base: str, device: str = "auto") -> LoadedModel | None:
    """The registry version to fine-tune from (``"scratch"`` -> ``None``), hash verified."""
    if base == SCRATCH:
        return None
    version = registry.get(base)
    return LoadedModel.from_folder(version.path, device)


def train_version(
    dataset: Path,
    base: str,
    config: TrainConfig,
    *,
    out_version: str = "",
    registry: Registry | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
    notes: str = "",
    dataset_info: dict[str, Any] | None = None,
    training_run_id: str | None = None,
) -> tuple[RegisteredModel | None, TrainResult]:
    """Train and register the result as a new immutable version (never production by itself).

    An interrupted run registers nothing: it returns ``(None, result)`` and leaves the
    checkpoint in ``checkpoint_dir`` to resume from. ``dataset_info`` (e.g. the name and id of
    the service's dataset) is added to the card's ``dataset`` record. ``training_run_id`` (the
    service's run) is recorded on the card and names the version (``run-<run id>`` unless
    ``out_version`` is given): a run registers one version however often it is retried.
    """
    if not Path(dataset).is_file():
        raise InputError(dataset, "dataset file not found (build one with `spineseg dataset build`)")
    registry = registry or open_registry()
    base_model = load_base(registry, base, config.device)
    try:
        result = train(Path(dataset), config, base=base_model, checkpoint_dir=checkpoint_dir, resume=resume,
                       callback=callback)
    except ValueError as exc:
        raise InputError(dataset, str(exc)) from exc
    if result.interrupted:
        log.warning("training interrupted: registry untouched; the checkpoint is kept to resume from")
        return None, result
    result.card.id = out_version or (run_version_id(training_run_id) if training_run_id else "")
    result.card.training_run_id = training_run_id
    result.card.notes = notes
    result.card.dataset.update(dataset_info or {})
    result.card.metrics["history"] = result.history
    with tempfile.TemporaryDirectory(prefix="spineseg-train-") as tmp:
        weights = save_weights(result.network, Path(tmp) / "weights.safetensors")
        version = registry.register(weights, result.card)
    log.info("registered version %s (parent %s)", version.id, version.card.parent_id or "none: trained from scratch")
    return version, result
