"""How a dataset's patient split will come out for a training run, said before the run starts:
patient and case counts per split from ``effective_split`` (the very function the training job
uses), and a warning when a split a run depends on is empty."""

from __future__ import annotations

from typing import Any

from spineseg.model.dataset import SPLITS
from spineseg.services.datasets import effective_split
from spineseg.store.training_models import Dataset


def split_preview(dataset: Dataset) -> dict[str, Any]:
    """``{"patients": {split: n}, "cases": {split: n}, "warning": str | None, "blocking": bool}``.

    ``blocking`` is true when no patient trains (the run is refused); an empty validation split
    only warns: the run trains, but the new version has no validation Dice and its best epoch
    cannot be chosen on held-out data.
    """
    split = effective_split(dataset)
    patients = {name: sum(1 for s in split.values() if s == name) for name in SPLITS}
    cases = {name: sum(1 for c in dataset.cases if split.get(c.patient) == name) for name in SPLITS}
    warning, blocking = None, False
    if not dataset.cases:
        warning, blocking = "this dataset has no cases yet: add labelled cases first", True
    elif patients["train"] == 0:
        warning, blocking = "no patient is in the training split: the run would be refused", True
    elif patients["val"] == 0:
        warning = ("no patient is in the validation split: the run will train, but the new version gets no "
                   "validation Dice (add a second patient, or move one to val on the dataset page)")
    return {"patients": patients, "cases": cases, "warning": warning, "blocking": blocking}


def describe_split(preview: dict[str, Any]) -> str:
    """One line for a form: ``"train 2 / val 1 / test 0 patients (5 / 1 / 0 cases)"``."""
    p, c = preview["patients"], preview["cases"]
    return (" / ".join(f"{name} {p[name]}" for name in SPLITS) + " patients ("
            + " / ".join(str(c[name]) for name in SPLITS) + " cases)")
