"""``segment``: a CT ``Volume`` in, a spine ``Segmentation`` on the same grid out.

Steps (each overridable by passing a different ``LoadedModel``): canonical orientation ->
resample to the model's spacing -> HU window -> 2.5D U-Net over axial slices in batches ->
probabilities back on the input grid -> threshold -> drop small components.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from spineseg.imaging.volume import Volume
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard
from spineseg.model.network import build_network, load_weights, pick_device, size_multiple
from spineseg.model.postprocess import clear_outside, plausible_spine
from spineseg.model.precision import FLOAT32, Precision, choose_precision
from spineseg.model.preprocess import (
    PreparedVolume,
    back_to_input_grid,
    mask_on_input_grid,
    pad_to_multiple,
    prepare_volume,
    slice_stack,
)

log = logging.getLogger(__name__)

BODY_HU = -300.0  # denser than this is body (or table), lighter is air
EDGE_MARGIN = 16  # voxels of air around every slice before the network (see pad_to_multiple)

Progress = Callable[[float, str], None]


@dataclass
class LoadedModel:
    """A network with its card, ready on a device, and the number format its forward pass runs
    in (chosen at load by ``choose_precision``: the card's ``inference_dtype`` is honoured only
    where the machine runs it fast)."""

    network: torch.nn.Module
    card: ModelCard
    device: torch.device
    precision: Precision = FLOAT32

    @classmethod
    def from_folder(cls, folder: Path, device: str = "auto") -> LoadedModel:
        folder = Path(folder)
        card = ModelCard.read(folder / CARD_FILE)
        network = load_weights(build_network(card.architecture), folder / WEIGHTS_FILE)
        target = pick_device(device)
        network = network.to(target).eval()
        precision = choose_precision(network, target, card.inference_dtype, card.architecture)
        return cls(network, card, target, precision)


@dataclass
class Segmentation:
    """The result of ``segment``.

    mask: uint8 (I, J, K) on the input grid, 1 = spine.
    volume: the input (its affine is the mask's affine).
    timings: seconds per stage (``preprocess``, ``model``, ``postprocess``, ``total``).
    inference: how the network ran: ``device``, ``dtype`` and the ``reason`` for that dtype.
    model_grid: float32 (I', J', K') sigmoid outputs on the model grid (RAS, model spacing),
        cleared (0) where post-processing rejected a component; with ``prepared``'s geometry
        it gives ``probabilities``.
    """

    mask: np.ndarray
    volume: Volume
    model_id: str
    timings: dict[str, float] = field(default_factory=dict)
    inference: dict[str, object] = field(default_factory=dict)
    model_grid: np.ndarray | None = field(default=None, repr=False)
    prepared: PreparedVolume | None = field(default=None, repr=False)

    @cached_property
    def probabilities(self) -> np.ndarray:
        """float32 (I, J, K) on the input grid: the network's sigmoid outputs, 0 where
        post-processing rejected a component. Computed on first access (a full-size float32
        array: the mask does not need it)."""
        if self.model_grid is None or self.prepared is None:
            raise ValueError("this segmentation keeps no probabilities")
        return back_to_input_grid(self.model_grid, self.prepared)

    @property
    def spine_volume_ml(self) -> float:
        return float(self.mask.sum()) * self.volume.voxel_volume_ml

    def mask_volume(self) -> Volume:
        return self.volume.with_array(self.mask)


_MODEL_CACHE: dict[tuple[str, float, str], LoadedModel] = {}


def resolve_loaded_model(model: LoadedModel | str | Path | None, device: str = "auto") -> LoadedModel:
    """``None`` -> the registry's production version; a folder with a card -> that model; any
    other string -> a registry version id. Loaded models are cached by weights file mtime."""
    if isinstance(model, LoadedModel):
        return model
    folder = _model_folder(model)
    weights = folder / WEIGHTS_FILE
    key = (str(folder.resolve()), weights.stat().st_mtime if weights.exists() else 0.0, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = LoadedModel.from_folder(folder, device)
    return _MODEL_CACHE[key]


def _model_folder(model: str | Path | None) -> Path:
    if model is not None and (Path(model) / CARD_FILE).is_file():
        return Path(model)
    from spineseg.registry import resolve_model  # the registry sits above the model layer

    resolved = resolve_model(model)
    return Path(getattr(resolved, "path", resolved))


@torch.inference_mode()
def predict_model_grid(
    loaded: LoadedModel, image: np.ndarray, *, batch_size: int = 16, progress: Progress | None = None
) -> np.ndarray:
    """Sigmoid probabilities (float32, same shape as ``image``) for a normalised volume on the
    model grid, one axial slice at a time in batches."""
    card = loaded.card
    n_slices = image.shape[2]
    out = np.empty(image.shape, dtype=np.float32)
    multiple = size_multiple(card.architecture)
    precision = loaded.precision
    for start in range(0, n_slices, batch_size):
        indices = np.arange(start, min(start + batch_size, n_slices))
        stack = slice_stack(image, indices, card.context_slices)
        batch, (h, w) = pad_to_multiple(stack, multiple, margin=EDGE_MARGIN)
        batch = batch.to(loaded.device)
        with torch.autocast(loaded.device.type, dtype=precision.dtype, enabled=precision.reduced):
            logits = loaded.network(batch)
        m = EDGE_MARGIN
        probs = torch.sigmoid(logits.float())[:, 0, m:m + h, m:m + w].cpu().numpy()
        out[:, :, indices] = probs.transpose(1, 2, 0)
        if progress:
            progress(float(indices[-1] + 1) / n_slices, "model")
    return out


def normalised_level(hu: float, window: tuple[float, float]) -> float:
    """Where ``hu`` lands after ``normalise_hu`` with ``window``."""
    low, high = window
    return (min(max(hu, low), high) - low) / (high - low)


def segment(
    volume: Volume,
    model: LoadedModel | str | Path | None = None,
    *,
    device: str = "auto",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Segmentation:
    """Segment the spine in ``volume`` with ``model`` (default: the production model)."""
    started = time.perf_counter()
    loaded = resolve_loaded_model(model, device)
    card = loaded.card
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    prepared = prepare_volume(volume, card.spacing_mm, card.window_hu)
    timings["preprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    probs_model = predict_model_grid(loaded, prepared.image, batch_size=batch_size, progress=progress)
    timings["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Components are judged on the model grid (small, near-isotropic); the probabilities of the
    # rejected ones are cleared before going back, so the input grid needs no labelling pass.
    body = prepared.image > normalised_level(BODY_HU, card.window_hu)
    prepared = dataclasses.replace(prepared, image=None)  # only its geometry is needed from here on
    keep = plausible_spine(probs_model >= card.threshold, body, card.spacing_mm, min_ml=card.min_component_ml)
    clear_outside(probs_model, keep)
    mask = mask_on_input_grid(probs_model, prepared, card.threshold)
    timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    inference = {"device": str(loaded.device), "dtype": loaded.precision.name, "reason": loaded.precision.reason}
    log.info("segmented %s with %s in %.2fs (%s, %s)", Path(volume.provenance.source).name or "a volume",
             card.id or "the model being trained", timings["total"], loaded.device, loaded.precision.name)
    return Segmentation(mask, volume, card.id, timings, inference, probs_model, prepared)
