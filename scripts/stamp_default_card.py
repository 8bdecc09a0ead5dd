"""Write into a trained default model's card what training alone cannot know: its expected
accuracy (the cross-validation of its recipe, ``bench/crossval.py --summarise
--expected-accuracy``) and the shipped default it replaces.

    python scripts/stamp_default_card.py spineseg/default_model/card.json \\
        --expected-accuracy training/default_expected_accuracy.json --predecessor spineseg-default-v1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spineseg.model.card import ModelCard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("--expected-accuracy", type=Path, required=True, metavar="JSON")
    parser.add_argument("--predecessor", default=None, help="id of the default this model replaces")
    args = parser.parse_args()
    card = ModelCard.read(args.card)
    summary = json.loads(args.expected_accuracy.read_text())
    if not summary.get("cases"):
        raise SystemExit(f"{args.expected_accuracy}: no cross-validated cases in it")
    card.metrics = card.metrics | {"cross_validation": summary}
    card.predecessor_id = args.predecessor
    args.card.write_text(card.to_json())
    full = sum(not case["partial"] for case in summary["cases"].values())
    print(f"{args.card}: expected Dice {summary['mean_dice']} +- {summary['sd_dice']} over {full} fully "
          f"labelled held-out cases; predecessor {card.predecessor_id}")


if __name__ == "__main__":
    main()
