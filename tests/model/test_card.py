"""Model cards as JSON."""

from __future__ import annotations

import json

import pytest

from spineseg.model.card import ModelCard


def test_a_card_writes_non_finite_numbers_as_null() -> None:
    card = ModelCard(id="m", architecture={"name": "monai.UNet"},
                     metrics={"val_dice": float("nan"), "history": [{"epoch": 1, "val_dice": float("nan"),
                                                                     "loss": float("inf"), "lr": 0.002}]})
    text = card.to_json()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the card's JSON"))
    assert data["metrics"] == {"val_dice": None, "history": [{"epoch": 1, "val_dice": None, "loss": None, "lr": 0.002}]}
    assert ModelCard.from_dict(data).metrics["history"][0]["lr"] == 0.002
