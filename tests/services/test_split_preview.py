"""The training form's split preview: counts from the same split the run uses, and a warning
when validation is empty."""

from __future__ import annotations

from spineseg.services.datasets import effective_split
from spineseg.services.split_preview import describe_split, split_preview
from tests.services.test_datasets_service import make_dataset


def test_two_patients_train_one_and_validate_on_the_other() -> None:
    dataset = make_dataset({}, ["P1", "P1", "P2"])
    preview = split_preview(dataset)
    assert preview["patients"] == {"train": 1, "val": 1, "test": 0} and preview["warning"] is None
    assert sum(preview["cases"].values()) == 3
    assert sorted(effective_split(dataset).values()) == ["train", "val"]
    assert describe_split(preview).startswith("train 1 / val 1 / test 0 patients (")


def test_an_empty_validation_split_is_said_before_the_run() -> None:
    one = split_preview(make_dataset({}, ["P1", "P1"]))
    assert one["patients"] == {"train": 1, "val": 0, "test": 0}
    assert "no patient is in the validation split" in one["warning"] and not one["blocking"]
    chosen = split_preview(make_dataset({"P1": "train", "P2": "train"}, ["P1", "P2"]))
    assert chosen["patients"]["val"] == 0 and chosen["warning"]
    no_train = split_preview(make_dataset({"P1": "val"}, ["P1"]))
    assert no_train["blocking"] and "training split" in no_train["warning"]
