"""A model is two files: ``weights.safetensors`` and ``card.json``.

The card carries everything inference needs (architecture, spacing, window, context slices,
threshold, post-processing) and, for registry versions, where the model came from (parent,
dataset, hyperparameters, metrics, sha256 of the weights). Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spineseg.errors import InputError

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
CARD_SCHEMA = 1


@dataclass
class ModelCard:
    """Description of one trained model.

    architecture: ``{"name": "monai.BasicUNet", "features": [...], "in_channels": C,
        "out_channels": 1}`` -- ``in_channels`` = 2 * context_slices + 1.
    spacing_mm: (x, y, z) spacing the network sees; slices are axial after canonical (RAS)
        reorientation; ``z`` is the distance between the context slices.
    window_hu: (low, high) HU clip, then linear map to [0, 1].
    context_slices: neighbours on each side stacked as channels (2.5D).
    threshold: on the sigmoid probability.
    min_component_ml: connected components smaller than this are dropped.
    inference_dtype: a preference for the forward pass's number format (``"float32"``,
        ``"bfloat16"``, ``"float16"`` or ``"auto"``), honoured only where the machine runs it
        natively and a timed probe shows it faster than float32 (``spineseg.model.precision``);
        elsewhere float32 runs, so no card can make a machine slower (bf16 autocast on a CPU
        without avx512_bf16/amx_bf16 is about ten times slower). The choice and its reason are
        logged and in the JSON summary; set a reduced format only after checking agreement.
    tta_flip: test-time augmentation: the probabilities are the mean of the network's on the
        slices and, mirrored back, on their left-right mirror images (twice the network time).
    parent_id: the version this one was fine-tuned from (``None``: trained from scratch).
    predecessor_id: the version this one replaces as the shipped default, whatever it was
        trained from (the registry keeps both; ``spineseg.registry.lookup``).
    metrics: what training measured (``val_dice``) and, for a shipped default,
        ``cross_validation``: its recipe's accuracy on patients it did not see, its expected
        accuracy (``scripts/expected_accuracy.py``).
    training_run_id: the service's training run that produced this version (``None`` for
        versions trained elsewhere); the registry keeps at most one version per run.
    """

    id: str
    architecture: dict[str, Any]
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.5)
    window_hu: tuple[float, float] = (-1000.0, 2000.0)
    context_slices: int = 1
    threshold: float = 0.5
    min_component_ml: float = 1.0
    inference_dtype: str = "float32"  # a preference: see spineseg.model.precision
    tta_flip: bool = False
    labels: dict[str, str] = field(default_factory=lambda: {"0": "background", "1": "spine"})
    parent_id: str | None = None
    predecessor_id: str | None = None
    created: str | None = None
    code_version: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None
    training_run_id: str | None = None
    notes: str = ""
    schema: int = CARD_SCHEMA

    def to_json(self) -> str:
        """Strict JSON: a non-finite number (a NaN validation Dice of a run without validation
        cases, as older cards hold) is written as null, which browsers and JSON APIs accept."""
        return json.dumps(_finite_or_none(asdict(self)), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<card>") -> ModelCard:
        known = set(cls.__dataclass_fields__)
        missing = {"id", "architecture"} - set(data)
        if missing:
            raise InputError(source, f"model card lacks {sorted(missing)}")
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.spacing_mm = tuple(float(v) for v in card.spacing_mm)  # type: ignore[assignment]
        card.window_hu = tuple(float(v) for v in card.window_hu)  # type: ignore[assignment]
        if not isinstance(card.tta_flip, bool):
            raise InputError(source, f"tta_flip must be true or false, not {card.tta_flip!r}")
        return card

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise InputError(path, "model card not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"model card is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(path, "model card must be a JSON object")
        return cls.from_dict(data, source=str(path))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def size_multiple(architecture: dict[str, Any]) -> int:
    """What the network's input height and width must be a multiple of: the product of its
    strides (here, not in ``network``, so inference need not import torch to know it)."""
    multiple = 1
    for stride in architecture["strides"]:
        multiple *= int(stride)
    return multiple


def case_relative(path: str, case_name: str) -> str:
    """A case file's name as a card records it: ``<case name>/<file or folder name>``, e.g.
    ``ts-abdomen/ct.nii.gz``; never the folder of the machine it was trained on."""
    name = Path(str(path)).name
    return f"{case_name}/{name}" if name and name != case_name else case_name


def portable_manifest(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A dataset manifest for a card: each case's ``ct`` and ``labels`` as ``case_relative``
    names (the dataset file keeps the full paths training reads)."""
    return [entry | {key: case_relative(entry[key], str(entry.get("name", "")))
                     for key in ("ct", "labels") if entry.get(key)} for entry in manifest]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
