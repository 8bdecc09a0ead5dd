"""``segment``: a CT ``Volume`` in, a spine ``Segmentation`` on the same grid out.

Steps (each overridable by passing a different ``LoadedModel``): canonical orientation ->
resample to the model's spacing -> HU window -> 2.5D U-Net over axial slices in batches (on a
box around the spine where the network allows it: ``spineseg.model.spine_box``) ->
probabilities back on the input grid -> threshold -> drop small components.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spineseg.imaging.volume import Volume
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, size_multiple
from spineseg.model.onnx_export import file_sha256, onnx_cache_path
from spineseg.model.postprocess import clear_outside, plausible_spine, refine_on_input_grid
from spineseg.model.precision import FLOAT32, Precision
from spineseg.model.preprocess import (
    EDGE_MARGIN,
    PreparedVolume,
    back_to_input_grid,
    mask_on_input_grid,
    pad_to_multiple,
    prepare_volume,
    slice_major,
    slice_stack,
)
from spineseg.model.runtime import (
    ORT,
    PROBE_SHAPE,
    TORCH,
    OrtNetwork,
    Runtime,
    cached_choice,
    choice_key,
    choose_runtime,
    gpu_present,
    package_version,
    sigmoid,
    time_call,
)
from spineseg.model.spine_box import (
    MIN_SLICES,
    air_margin,
    body_box,
    box_fraction,
    local_network,
    local_spine_box,
    spine_box,
    survey_slices,
    within,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BODY_HU = -300.0  # denser than this is body (or table), lighter is air

Progress = Callable[[float, str], None]
TORCH_RUNTIME = Runtime(TORCH, "torch")
ORT_PRECISION = Precision("float32", "onnxruntime runs float32 (int8 was measured and disagrees; see runtime.py)")


class LoadedModel:
    """A network with its card, ready on a device, the number format its forward pass runs in
    (chosen at load by ``choose_precision``: the card's ``inference_dtype`` is honoured only
    where the machine runs it fast) and the runtime that runs it (``choose_runtime``: torch, or
    an ONNX Runtime session of the same weights where the probe finds it faster and agreeing).

    ``network`` is the torch module; when ONNX Runtime runs the model it is built from the
    weights only if asked for (so inference need not import torch). Setting ``network``
    replaces the model and drops the ONNX Runtime session (which ran the old one)."""

    def __init__(self, network: torch.nn.Module | None, card: ModelCard, device: torch.device | str,
                 precision: Precision = FLOAT32, runtime: Runtime = TORCH_RUNTIME,
                 session: OrtNetwork | None = None, folder: Path | None = None) -> None:
        self._network = network
        self.card = card
        self.device = device
        self.precision = precision
        self.runtime = runtime if session is not None or runtime.name == TORCH else TORCH_RUNTIME
        self.session = session
        self.folder = folder

    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            from spineseg.model.network import build_network, load_weights

            if self.folder is None:
                raise ValueError("this model has no torch network and no weights folder to build it from")
            self._network = load_weights(build_network(self.card.architecture), self.folder / WEIGHTS_FILE).eval()
        return self._network

    @network.setter
    def network(self, network: torch.nn.Module) -> None:
        self._network = network
        self.session, self.runtime = None, TORCH_RUNTIME

    @property
    def inference(self) -> dict[str, object]:
        """How the network runs: ``device``, ``dtype``, ``reason`` (for the dtype), ``runtime``
        and ``runtime_reason``."""
        return {"device": str(self.device), "dtype": self.precision.name, "reason": self.precision.reason,
                "runtime": self.runtime.name, "runtime_reason": self.runtime.reason}

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (float32 (B, out, H, W)) for a float32 batch (B, C, H, W)."""
        if self.session is not None:
            return sigmoid(self.session(batch))
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            precision = self.precision
            with torch.autocast(x.device.type, dtype=precision.dtype, enabled=precision.reduced):
                logits = self.network(x)
            return torch.sigmoid(logits.float()).cpu().numpy()

    @classmethod
    def from_folder(cls, folder: Path, device: str = "auto", runtime: str | None = None) -> LoadedModel:
        """Load a model folder (card + weights) for ``device``; ``runtime`` (default
        ``SPINESEG_RUNTIME`` or ``auto``) as in ``spineseg.model.runtime``."""
        folder = Path(folder)
        card = ModelCard.read(folder / CARD_FILE)
        preference = runtime or os.environ.get("SPINESEG_RUNTIME", "auto")
        weights = folder / WEIGHTS_FILE
        sha = _weights_sha(weights)  # read once: it keys both the cached graph and the runtime choice
        fast = _load_without_torch(folder, card, device, preference, sha)
        if fast is not None:
            return fast
        from spineseg.model.network import build_network, load_weights, pick_device
        from spineseg.model.precision import choose_precision

        network = load_weights(build_network(card.architecture), weights)
        target = pick_device(device)
        network = network.to(target).eval()
        precision = choose_precision(network, target, card.inference_dtype, card.architecture)
        loaded = cls(network, card, target, precision, folder=folder)
        key = choice_key(sha, card.architecture)
        choice = choose_runtime(preference, target.type, key, lambda: _probe(loaded, sha))
        if choice.name == TORCH:
            loaded.runtime = choice  # with the probe's reason, for the log and the run summary
        else:
            try:
                loaded.session = OrtNetwork(_onnx_file(loaded.network, card, sha))
                loaded.runtime, loaded.precision = choice, ORT_PRECISION
            except Exception as exc:  # a broken graph or session: torch runs it
                log.warning("onnxruntime unusable (%s: %s); torch runs the model", type(exc).__name__, exc)
                loaded.runtime = Runtime(TORCH, f"onnxruntime was chosen but unusable ({type(exc).__name__})")
        return loaded


def _weights_sha(weights: Path) -> str:
    return file_sha256(weights) if weights.exists() else "none"


def _load_without_torch(folder: Path, card: ModelCard, device: str, preference: str,
                        sha: str) -> LoadedModel | None:
    """The model on ONNX Runtime without importing torch, when this machine's runtime choice is
    already known to be ONNX Runtime (or it is requested), the graph is in the cache and no GPU
    can be meant; otherwise ``None``."""
    if device not in ("auto", "cpu") or (device == "auto" and gpu_present()) or preference not in ("auto", ORT):
        return None
    if package_version("onnxruntime") is None or package_version("torch") is None:
        return None
    path = onnx_cache_path(sha, package_version("torch") or "")
    if not path.exists():
        return None
    choice = (choose_runtime(ORT, "cpu", "", lambda: {}) if preference == ORT
              else cached_choice(choice_key(sha, card.architecture)))
    if choice is None or choice.name != ORT:
        return None
    try:
        session = OrtNetwork(path)
    except Exception as exc:  # a damaged cache file: the full load rebuilds it
        log.warning("cached ONNX graph %s unusable (%s); loading with torch", path, exc)
        path.unlink(missing_ok=True)
        return None
    return LoadedModel(None, card, "cpu", ORT_PRECISION, choice, session, folder)


def _onnx_file(network: torch.nn.Module, card: ModelCard, sha: str) -> Path:
    """The network's ONNX graph from the cache, exported there first when missing."""
    from spineseg.model.onnx_export import export_onnx

    path = onnx_cache_path(sha, package_version("torch") or "")
    if not path.exists():
        t0 = time.perf_counter()
        export_onnx(network, int(card.architecture["in_channels"]), path)
        log.info("exported the network to %s in %.1fs", path, time.perf_counter() - t0)
    return path


def _probe(loaded: LoadedModel, sha: str) -> dict[str, float]:
    """The runtime probe: seconds per probe batch for torch (in its chosen format) and ONNX
    Runtime, and their largest probability difference."""
    rng = np.random.default_rng(0)
    batch = rng.random((PROBE_SHAPE[0], int(loaded.card.architecture["in_channels"]), *PROBE_SHAPE[1:]),
                       dtype=np.float32)
    session = OrtNetwork(_onnx_file(loaded.network, loaded.card, sha))
    torch_s = time_call(lambda: loaded.probabilities(batch))
    ort_s = time_call(lambda: session(batch))
    diff = float(np.abs(loaded.probabilities(batch) - sigmoid(session(batch))).max())
    return {TORCH: torch_s, ORT: ort_s, "max_diff": diff}


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


def predict_model_grid(
    loaded: LoadedModel, image: np.ndarray, *, batch_size: int = 16, progress: Progress | None = None,
    slices: np.ndarray | None = None, out: np.ndarray | None = None,
    margin: tuple[int, int, int, int] = (EDGE_MARGIN,) * 4,
) -> np.ndarray:
    """Sigmoid probabilities (float32, same shape as ``image``) for a normalised volume on the
    model grid, one axial slice at a time in batches: of every slice, or of ``slices`` only
    (written into ``out`` when given, the other slices left as they are). ``margin``: voxels of
    air added before and after the rows, before and after the columns (``pad_to_multiple``)."""
    card = loaded.card
    n_slices = image.shape[2]
    todo = np.arange(n_slices) if slices is None else np.asarray(slices, dtype=np.intp)
    out = slice_major(image.shape) if out is None else out
    planes = out.transpose(2, 0, 1)  # (K, I, J): a view
    multiple = size_multiple(card.architecture)
    for start in range(0, todo.size, batch_size):
        indices = todo[start:start + batch_size]
        stack = slice_stack(image, indices, card.context_slices)
        batch, (h, w) = pad_to_multiple(stack, multiple, margin=margin)
        top, left = margin[0], margin[2]
        probs = loaded.probabilities(batch)
        if card.tta_flip:  # the left-right mirror (axis 0 of the RAS grid is R -> L), mirrored back
            probs += loaded.probabilities(np.ascontiguousarray(batch[:, :, ::-1]))[:, :, ::-1]
            probs *= 0.5
        probs = probs[:, 0, top:top + h, left:left + w]
        planes[indices] = probs
        if progress:
            progress(float(start + indices.size) / todo.size, "model")
    return out


def predict_around_spine(
    loaded: LoadedModel, image: np.ndarray, *, batch_size: int = 16, progress: Progress | None = None,
    body: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """``predict_model_grid``, run on less than the plane where the network allows it
    (``spineseg.model.spine_box``): the survey slices on the body's box, each batch of the others
    on the box around the spine the survey found near it (or around all the survey found, or
    the body's box, when there is none). ``body``: ``image`` above
    ``BODY_HU``, if the caller has it. Returns the probabilities and the share of the plane the
    other slices ran on, on average (1: the whole plane everywhere); outside the boxes they are 0."""
    card, n_slices = loaded.card, image.shape[2]
    if not local_network(card.architecture) or n_slices < MIN_SLICES:
        return predict_model_grid(loaded, image, batch_size=batch_size, progress=progress), 1.0
    stride = size_multiple(card.architecture)
    body = image > normalised_level(BODY_HU, card.window_hu) if body is None else body
    around_body = body_box(body, stride)
    survey = survey_slices(n_slices)
    surveyed = survey.size / n_slices  # the survey's part of the progress

    def scaled(low: float, high: float) -> Progress | None:
        return (lambda f, stage: progress(low + (high - low) * f, stage)) if progress else None

    out = slice_major(image.shape, zeros=True)
    predict_model_grid(loaded, image[around_body], batch_size=batch_size, progress=scaled(0.0, surveyed),
                       slices=survey, out=out[around_body])
    found = out[:, :, survey] >= card.threshold
    # No spine surveyed, or it spans most of the plane: the body's box.
    whole = spine_box(found, stride)
    whole = around_body if whole is None else within(whole, around_body)
    rest = np.setdiff1d(np.arange(n_slices), survey)

    def done(n_rest: int) -> float:  # the progress once n_rest of the other slices have run
        return surveyed + (1 - surveyed) * n_rest / rest.size

    area = 0.0
    for start in range(0, rest.size, batch_size):
        batch = rest[start:start + batch_size]
        box = local_spine_box(found, survey, batch, stride)
        box = whole if box is None else within(box, around_body)  # nothing near these slices: the whole survey's
        predict_model_grid(loaded, image[box], batch_size=batch_size, slices=batch, out=out[box],
                           margin=air_margin(box, around_body), progress=scaled(done(start), done(start + batch.size)))
        area += box_fraction(box, image.shape[:2]) * batch.size
    return out, area / max(rest.size, 1)


def refine_edges(mask: np.ndarray, volume: Volume) -> None:
    """``mask`` (input grid, in place) with a hollow body's interior filled and the bone's rim
    taken, on the input's own voxels (``postprocess.refine_on_input_grid``)."""
    from spineseg.imaging.resample import canonical_transform, canonical_view

    ornt, canonical_affine = canonical_transform(volume.affine, volume.shape)
    spacing = tuple(float(v) for v in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    view = canonical_view(mask, ornt)
    if view.any():
        view[...] = refine_on_input_grid(view, canonical_view(volume.array, ornt), spacing)


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
    body = prepared.image > normalised_level(BODY_HU, card.window_hu)
    probs_model, plane_share = predict_around_spine(loaded, prepared.image, batch_size=batch_size,
                                                    progress=progress, body=body)
    timings["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Components are judged on the model grid (small, near-isotropic); the probabilities of the
    # rejected ones are cleared before going back, so the input grid needs no labelling pass.
    prepared = dataclasses.replace(prepared, image=None)  # only its geometry is needed from here on
    keep = plausible_spine(probs_model >= card.threshold, body, card.spacing_mm, min_ml=card.min_component_ml)
    clear_outside(probs_model, keep)
    mask = mask_on_input_grid(probs_model, prepared, card.threshold)
    refine_edges(mask, volume)
    timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    inference = loaded.inference | {"plane_share": round(plane_share, 3)}
    log.info("segmented %s with %s in %.2fs (%s, %s, %s)", Path(volume.provenance.source).name or "a volume",
             card.id or "the model being trained", timings["total"], loaded.device, loaded.precision.name,
             loaded.runtime.name)
    return Segmentation(mask, volume, card.id, timings, inference, probs_model, prepared)
