"""Per-vertebra exports of a run's levels: a DICOM SEG with one segment per vertebra (SNOMED CT
codes of DICOM PS3.16 CID 7603, recommended display colours) and a zip of one STL per vertebra."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from spineseg.errors import InputError
from spineseg.model.level_ids import GENERIC_VERTEBRA, colour, label_name, snomed_code
from spineseg.registry.version import package_version
from spineseg.services.dicom_seg import (
    complete_identifiers,
    content_description,
    save_dicom,
    source_slices,
    values_on_slice,
)
from spineseg.services.levels import shown_name
from spineseg.services.mesh import mask_surface, triangle_normals

log = logging.getLogger(__name__)


def _labels(levels: np.ndarray) -> list[int]:
    labels = [int(v) for v in np.unique(levels) if v > 0]
    if not labels:
        raise InputError("levels", "no vertebra was found in this run, so there is nothing per vertebra to export")
    return labels


def segment_label(label: int, withheld: frozenset[int] | set[int] = frozenset()) -> str:
    """A levels SEG segment's label: the level's name, or "withheld (read as T7)" for a vertebra
    whose name the quality checks withheld (its segment stays, coded as a vertebra of no level)."""
    return shown_name(label_name(label), label in withheld)


def write_levels_dicom_seg(levels: np.ndarray, affine: np.ndarray, dicom_folder: Path, series_uid: str | None,
                           path: Path, *, model_id: str, sources: list | None = None,
                           quality: str | None = None, withheld: frozenset[int] | set[int] = frozenset()) -> Path:
    """A DICOM SEG of ``levels`` (VerSe ids / unnamed 101..) referencing the source series:
    segment n is the n-th vertebra top to bottom in label order, coded and coloured
    (``sources``: the series' ``source_slices`` when the caller has read them already;
    ``quality``: the run's verdict, carried in the ContentDescription; ``withheld``: the labels
    whose names the quality checks withheld, labelled and coded by ``segment_label``)."""
    labels = _labels(levels)
    sources = sources if sources is not None else source_slices(dicom_folder, series_uid)
    derived = complete_identifiers(sources)
    lut = np.zeros(int(levels.max()) + 1, dtype=np.uint16)
    for number, label in enumerate(labels, start=1):
        lut[label] = number
    segment_numbers = lut[np.asarray(levels, dtype=np.int64)]
    frames = np.stack([values_on_slice(segment_numbers, affine, ds) for ds in sources])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="SpineSeg levels", version=model_id[:64], family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, label in enumerate(labels, start=1):
        value, meaning = GENERIC_VERTEBRA if label in withheld else snomed_code(label)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment_label(label, withheld),
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=Code(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*colour(label)),
        ))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="SpineSeg", manufacturer_model_name="SpineSeg",
        software_versions=package_version(), device_serial_number="none",
        series_description="Vertebrae (SpineSeg levels)", omit_empty_frames=False,
        content_description=content_description(quality, derived),
    )
    path = save_dicom(seg, path)
    log.info("wrote a DICOM SEG of %d vertebrae to %s", len(labels), path)
    return path


def _stl_bytes(vertices: np.ndarray, faces: np.ndarray, name: str) -> bytes:
    from spineseg.services.mesh import STL_TRIANGLE

    records = np.zeros(len(faces), dtype=STL_TRIANGLE)
    records["normal"] = triangle_normals(vertices, faces)
    records["vertices"] = vertices[faces]
    header = f"SpineSeg {name}, RAS+ millimetres".encode()[:80].ljust(80, b" ")
    return header + np.uint32(len(faces)).tobytes() + records.tobytes()


def write_vertebrae_stl_zip(levels: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """A zip of ``<name>.stl`` (binary STL, RAS+ mm), one per vertebra."""
    labels = _labels(levels)
    boxes = ndimage.find_objects(levels, max_label=max(labels))  # every vertebra's box in one pass
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for label in labels:
            box = boxes[label - 1]
            shift = np.eye(4)
            shift[:3, 3] = [b.start for b in box]
            vertices, faces = mask_surface(levels[box] == label, affine @ shift)
            name = label_name(label).replace(" ", "_")
            archive.writestr(f"{name}.stl", _stl_bytes(vertices, faces, name))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".part-" + path.name)
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return path
