"""Supervised training of the 2.5D U-Net from a dataset file, starting from scratch or from a
saved model (the paper's retrain-from-saved-model loop).

The loop knows nothing of the registry: it returns the trained network, its card (without an
id) and the metrics; the caller registers the version. Ctrl-C / SIGTERM stop it cleanly after
the current step, leaving the last epoch's checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from spineseg.imaging.io import load_labels, load_volume
from spineseg.metrics import dice as dice_score
from spineseg.model.augment import build_augmentation, coarsen_plane, darken_marrow, drop_context
from spineseg.model.card import ModelCard, portable_manifest
from spineseg.model.dataset import CaseArrays, load_dataset
from spineseg.model.inference import LoadedModel, segment
from spineseg.model.network import DEFAULT_ARCHITECTURE, build_network, pick_device, save_weights
from spineseg.model.preprocess import normalise_hu

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyperparameters; every field is recorded in the resulting model card."""

    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 16
    patch_size: int = 160
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    patience: int = 10
    seed: int = 0
    spine_slice_fraction: float = 0.8
    drop_context_prob: float = 0.1
    tight_crop_prob: float = 0.15
    dark_marrow_prob: float = 0.25  # chance of darken_marrow on a sample (chosen by cross-validation)
    dark_marrow_factor: tuple[float, float] = (0.15, 0.6)  # its HU scale, drawn uniformly
    coarse_plane_prob: float = 0.25  # chance of coarsen_plane on a sample (chosen by cross-validation)
    coarse_plane_zoom: tuple[float, float] = (0.25, 0.8)  # model-grid / coarse voxel size, drawn uniformly
    bf16: bool = False
    device: str = "auto"
    threads: int = 0
    architecture: dict | None = None  # for training from scratch; None = DEFAULT_ARCHITECTURE


@dataclass
class TrainEvent:
    """What a progress callback receives after each step and each epoch."""

    epoch: int
    step: int
    total_steps: int
    loss: float
    metrics: dict = field(default_factory=dict)
    kind: str = "step"


@dataclass
class TrainResult:
    network: torch.nn.Module
    card: ModelCard
    history: list[dict]
    stopped_early: bool
    interrupted: bool


class _StopFlag:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread signals cannot be caught: the caller stops us another way.
            with contextlib.suppress(ValueError):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("signal %s: stopping after this step", signum)
        self.stop = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


class SliceSampler:
    """Random 2.5D training samples from the training cases: a case (weighted by the square
    root of its trusted slices), a trusted slice (mostly ones showing spine), a patch (mostly
    centred near spine), padded with air where the image is smaller than the patch."""

    def __init__(self, cases: list[CaseArrays], card: ModelCard, config: TrainConfig, rng: np.random.Generator):
        self.cases = [c for c in cases if c.valid.any()]
        if not self.cases:
            raise ValueError("no training case has trusted slices")
        weights = np.array([math.sqrt(c.valid.sum()) for c in self.cases])
        self.case_p = weights / weights.sum()
        self.images = [normalise_hu(c.image, card.window_hu) for c in self.cases]
        self.context = card.context_slices
        self.window = card.window_hu
        self.config = config
        self.rng = rng

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng = self.config, self.rng
        i = rng.choice(len(self.cases), p=self.case_p)
        case, image = self.cases[i], self.images[i]
        valid = np.flatnonzero(case.valid)
        with_spine = valid[case.mask[:, :, valid].any(axis=(0, 1))]
        pool = with_spine if with_spine.size and rng.random() < cfg.spine_slice_fraction else valid
        k = int(rng.choice(pool))
        ks = np.clip(np.arange(k - self.context, k + self.context + 1), 0, image.shape[2] - 1)
        stack = image[:, :, ks].transpose(2, 0, 1)  # (C, I, J), a copy (fancy indexing)
        label = case.mask[:, :, k][None].astype(np.float32)
        if cfg.dark_marrow_prob and rng.random() < cfg.dark_marrow_prob:  # no draw when off: same stream
            stack = darken_marrow(stack, case.mask[:, :, ks].transpose(2, 0, 1) > 0,
                                  float(rng.uniform(*cfg.dark_marrow_factor)), self.window)
        return self._crop(stack, label, case.mask[:, :, k])

    def _crop(self, stack: np.ndarray, label: np.ndarray, mask2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, rng = self.config.patch_size, self.rng
        _, h, w = stack.shape
        ys, xs = np.nonzero(mask2d)
        if ys.size and rng.random() < 0.7:
            j = rng.integers(ys.size)
            cy, cx = ys[j] + rng.integers(-p // 4, p // 4 + 1), xs[j] + rng.integers(-p // 4, p // 4 + 1)
        else:
            cy, cx = rng.integers(h), rng.integers(w)
        out_img = np.zeros((stack.shape[0], p, p), dtype=np.float32)
        out_lbl = np.zeros((1, p, p), dtype=np.float32)
        y0, x0 = int(cy) - p // 2, int(cx) - p // 2
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + p, h), min(x0 + p, w)
        out_img[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = stack[:, sy0:sy1, sx0:sx1]
        out_lbl[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = label[:, sy0:sy1, sx0:sx1]
        if out_lbl.any() and rng.random() < self.config.tight_crop_prob:
            self._keep_box_around_spine(out_img, out_lbl)
        return out_img, out_lbl

    def _keep_box_around_spine(self, image: np.ndarray, label: np.ndarray) -> None:
        """Simulate a scan cropped tightly around the spine: air outside a box that holds the
        labelled spine plus a random margin (the box may cut into it; labels follow)."""
        rng = self.rng
        ys, xs = np.nonzero(label[0])
        margin = rng.integers(-4, 30, size=4)
        y0, y1 = max(ys.min() - margin[0], 0), ys.max() + 1 + margin[1]
        x0, x1 = max(xs.min() - margin[2], 0), xs.max() + 1 + margin[3]
        keep = np.zeros(label.shape[1:], dtype=bool)
        keep[y0:y1, x0:x1] = True
        image[:, ~keep] = 0.0
        label[:, ~keep] = 0.0


@dataclass
class ValidationCase:
    name: str
    volume: object
    truth: np.ndarray


def load_validation_cases(manifest: list[dict], split: str = "val") -> list[ValidationCase]:
    """The original volumes and truth masks of a split, for whole-volume Dice."""
    cases = []
    for entry in manifest:
        if entry["split"] == split:
            volume = load_volume(entry["ct"])
            truth = load_labels(entry["labels"], volume, convention=entry["convention"]).mask
            cases.append(ValidationCase(entry["name"], volume, truth))
    return cases


def whole_volume_dice(network: torch.nn.Module, card: ModelCard, device: torch.device,
                      cases: list[ValidationCase]) -> dict[str, float]:
    """Dice of the full inference pipeline on each case's original grid."""
    network.eval()
    loaded = LoadedModel(network, card, device)
    scores = {c.name: dice_score(segment(c.volume, loaded).mask, c.truth) for c in cases}
    network.train()
    return scores


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train(
    dataset_path: Path,
    config: TrainConfig,
    *,
    base: LoadedModel | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train on ``dataset_path`` from ``base`` (or from scratch) and return the best network by
    validation Dice (or the last one when there are no validation cases)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    attrs, cases = load_dataset(dataset_path)
    device = pick_device(config.device)
    if base is not None:
        card = ModelCard.from_dict(asdict(base.card))
        card.parent_id = base.card.id
        network = build_network(card.architecture)
        network.load_state_dict(base.network.state_dict())
        if tuple(card.spacing_mm) != tuple(attrs["spacing_mm"]):
            raise ValueError(f"dataset spacing {attrs['spacing_mm']} differs from the base model's {card.spacing_mm}")
    else:
        architecture = dict(config.architecture or DEFAULT_ARCHITECTURE)
        card = ModelCard(id="", architecture=architecture, spacing_mm=attrs["spacing_mm"])
        network = build_network(card.architecture)
    card.id, card.metrics, card.weights_sha256, card.created = "", {}, None, None
    card.training_run_id = None  # a fine-tuned card starts as a copy of its base's
    card.hyperparameters = asdict(config)
    card.dataset = {"path": Path(dataset_path).name, "content_sha256": attrs["content_sha256"],
                    "manifest": portable_manifest(attrs["manifest"]), "split": attrs["split"]}
    # Channels-last convolutions: a training step of the default 2D U-Net (16 x 3 x 160 x 160)
    # took 193 ms instead of 321 ms on this 2-core CPU (same run); CUDA's kernels prefer it too.
    memory_format = torch.channels_last if int(card.architecture.get("spatial_dims", 2)) == 2 else torch.preserve_format
    network.to(device, memory_format=memory_format).train()

    train_cases = [c for c in cases if c.split == "train"]
    sampler = SliceSampler(train_cases, card, config, rng)
    augment = build_augmentation(config.seed)
    val_cases = load_validation_cases(attrs["manifest"], "val")
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))
    loss_fn = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)

    start_epoch, best, best_state, history, since_best = 0, -1.0, None, [], 0
    ckpt = checkpoint_dir / "checkpoint.pt" if checkpoint_dir else None
    if resume and ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best"])
        best_state = state.get("best_network")
        history = json.loads(state["history"])
        log.info("resumed from the checkpoint at epoch %d", start_epoch)

    interrupted = stopped_early = False
    with _StopFlag() as stop:
        for epoch in range(start_epoch, config.epochs):
            started, losses = time.perf_counter(), []
            for step in range(config.steps_per_epoch):
                images, labels = [], []
                for _ in range(config.batch_size):
                    img, lbl = sampler.sample()
                    out = augment({"image": torch.from_numpy(img), "label": torch.from_numpy(lbl)})
                    image = torch.as_tensor(out["image"])
                    if config.coarse_plane_prob and rng.random() < config.coarse_plane_prob:  # no draw when off
                        image = coarsen_plane(image, float(rng.uniform(*config.coarse_plane_zoom)))
                    images.append(drop_context(image, rng, config.drop_context_prob))
                    labels.append(torch.as_tensor(out["label"]))
                x = torch.stack(images).to(device, memory_format=memory_format)
                y = torch.stack(labels).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    logits = network(x)
                loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.detach().item())
                if callback:
                    callback(TrainEvent(epoch, epoch * config.steps_per_epoch + step + 1, total_steps, losses[-1]))
                if stop.stop:
                    break
            if stop.stop:
                interrupted = True
                break
            scores = whole_volume_dice(network, card, device, val_cases) if val_cases else {}
            val_dice = float(np.mean(list(scores.values()))) if scores else float("nan")
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val_dice if scores else None,
                      "val_dice_per_case": scores, "seconds": time.perf_counter() - started,
                      "lr": scheduler.get_last_lr()[0]}
            history.append(record)
            log.info("epoch %d loss %.4f val_dice %.4f (%.0fs)", epoch + 1, record["loss"], val_dice, record["seconds"])
            improved = not scores or val_dice > best
            if improved:
                best, since_best = (val_dice if scores else best), 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                since_best += 1
            if callback:
                callback(TrainEvent(epoch + 1, (epoch + 1) * config.steps_per_epoch, total_steps,
                                    record["loss"], {"val_dice": val_dice}, kind="epoch"))
            if ckpt:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                tmp = ckpt.with_name(ckpt.name + ".part")
                torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best,
                            "best_network": best_state, "history": json.dumps(history)}, tmp)
                tmp.replace(ckpt)
            if scores and since_best >= config.patience:
                log.info("early stop: no validation improvement for %d epochs", since_best)
                stopped_early = True
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    card.metrics = {"val_dice": best if best >= 0 else None, "epochs_run": len(history)}
    return TrainResult(network, card, history, stopped_early, interrupted)


def save_model_folder(result: TrainResult, folder: Path) -> Path:
    """Write weights + card (no id yet unless set) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(result.network, folder / "weights.safetensors")
    (folder / "card.json").write_text(result.card.to_json())
    return folder
