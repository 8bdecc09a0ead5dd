"""A run's per-vertebra measurements as a DICOM Structured Report, TID 1500 "Measurement Report",
built with highdicom's templates (Comprehensive 3D SR storage).

One TID 1411 group (volumetric ROI measurements) per vertebra, top to bottom:

- tracking identifier: the vertebra's name and a UID; finding and finding site: its level, coded
  in SNOMED CT as in the levels SEG (``model.level_ids.snomed_code``); a vertebra whose name the
  quality checks withheld is coded as a vertebra of no level (SCT 51282000), its identifier is
  its SEG segment's label "withheld (read as T7)" and a TEXT item says the level is withheld, why;
- the ROI: its segment in the levels SEG (``services.level_exports``), with the source CT images
  the segment lies on (the measurements are made on those voxels);
- measurements (TID 300): trabecular attenuation (mean and median, HU), the trabecular sample's
  and the vertebra's volume (mL), the anterior / middle / posterior body heights (mm) and their
  ratios Ha/Hp, Hm/Hp and Hp / neighbours' Hp; a value that was not measured or that the quality
  gate withheld is absent, never written as 0;
- qualitative evaluations: the Genant grade, or "not assessable" with the gate's reason as a
  TEXT item; the density flag (published L1 thresholds) when there is one; the run's quality
  verdict (``services.quality``), with its reasons as TEXT items;
- algorithm identification (TID 4019): the model version of the run.

Concepts that DICOM / SNOMED CT do not code (the three named heights, the ratios, the Genant
grade, the verdicts) use the private coding scheme ``99SPINESEG`` (PS3.16 allows local schemes
beginning with "99"); their meanings are spelled out so a PACS viewer shows them readably.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from spineseg.errors import InputError
from spineseg.metrics.vertebra_measures import FLAG_NOTE, PICKHARDT_L1
from spineseg.model.level_ids import GENERIC_VERTEBRA, label_name, snomed_code
from spineseg.registry.version import package_version
from spineseg.services.dicom_seg import complete_identifiers, save_dicom, source_slices, values_on_slice
from spineseg.services.levels import shown_name

log = logging.getLogger(__name__)

SCHEME = "99SPINESEG"


def local_code(value: str, meaning: str) -> Code:
    """A concept of the private scheme ``99SPINESEG``."""
    return Code(value, SCHEME, meaning)


MM = codes.UCUM.Millimeter
ML = Code("mL", "UCUM", "milliliter")
HU = codes.UCUM.HounsfieldUnit
RATIO = Code("1", "UCUM", "no units")

# summary key -> (concept name, unit, derivation or None)
MEASUREMENTS: dict[str, tuple[Code, Code, Code | None]] = {
    "hu_mean": (codes.DCM.AttenuationCoefficient, HU, codes.SCT.Mean),
    "hu_median": (codes.DCM.AttenuationCoefficient, HU, codes.SCT.Median),
    "roi_ml": (local_code("TRABROI", "Trabecular sample volume"), ML, None),
    "volume_ml": (codes.SCT.Volume, ML, None),
    "height_anterior_mm": (local_code("HA", "Anterior vertebral body height"), MM, None),
    "height_middle_mm": (local_code("HM", "Middle vertebral body height"), MM, None),
    "height_posterior_mm": (local_code("HP", "Posterior vertebral body height"), MM, None),
    "ha_hp": (local_code("HAHP", "Anterior to posterior height ratio"), RATIO, None),
    "hm_hp": (local_code("HMHP", "Middle to posterior height ratio"), RATIO, None),
    "hp_neighbours": (local_code("HPNB", "Posterior height to neighbours' ratio"), RATIO, None),
}
GENANT = local_code("GENANT", "Genant semi-quantitative grade")
GRADES = {0: local_code("G0", "Grade 0 (normal)"), 1: local_code("G1", "Grade 1 (mild, 20-25 % reduction)"),
          2: local_code("G2", "Grade 2 (moderate, 25-40 % reduction)"),
          3: local_code("G3", "Grade 3 (severe, > 40 % reduction)")}
NOT_ASSESSABLE = local_code("NA", "Not assessable")
NOT_ASSESSABLE_REASON = local_code("NAREASON", "Reason not assessable")
DENSITY_FLAG = local_code("DENSFLAG", "Trabecular density flag")
DENSITY_FLAGS = {text: local_code(f"D{i + 1}", text) for i, (_, text) in enumerate(PICKHARDT_L1)}
FLAG_STATEMENT = local_code("FLAGNOTE", "Note on flags")
QUALITY = local_code("QUALITY", "Result quality verdict")
VERTEBRA_QUALITY = local_code("VQUALITY", "Vertebra quality verdict")
VERDICTS = {"ok": local_code("QOK", "ok"), "review": local_code("QREVIEW", "review"),
            "not assessable": local_code("QNA", "not assessable")}
QUALITY_REASON = local_code("QREASON", "Quality verdict reason")
LEVEL_WITHHELD = local_code("LVLWITHHELD", "Vertebral level withheld")
# The change since the newest prior study (metrics.prior_change, via services.prior_studies)
PRIOR_STUDY = local_code("PRIOR", "Prior study compared")
PRIOR_CHANGES: dict[str, tuple[Code, Code]] = {
    "hu_change": (local_code("DHU", "Trabecular HU change since prior"), HU),
    "anterior_change_mm": (local_code("DHA", "Anterior height change since prior"), MM),
    "middle_change_mm": (local_code("DHM", "Middle height change since prior"), MM),
    "posterior_change_mm": (local_code("DHP", "Posterior height change since prior"), MM),
}
PRIOR_FLAGGED = local_code("PRIORFLAG", "Change since prior flagged")
PRIOR_FLAG_VALUES = {True: local_code("Y", "flagged"), False: local_code("N", "not flagged")}
PRIOR_FLAG_TEXT = local_code("PRIORFLAGTXT", "Change since prior flag")
SERIES_NUMBER = 903
Group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:1024],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def segment_numbers(levels_seg: pydicom.Dataset) -> dict[str, int]:
    """Segment label -> segment number of a levels SEG."""
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in levels_seg.SegmentSequence}


def slices_of_labels(levels: np.ndarray, affine: np.ndarray, sources: list[pydicom.Dataset]) -> dict[int, list[int]]:
    """label -> indices of the source slices on which it has pixels (as the SEG frames sample it)."""
    found: dict[int, list[int]] = {}
    for index, ds in enumerate(sources):
        for label in np.unique(values_on_slice(levels, affine, ds)):
            if label > 0:
                found.setdefault(int(label), []).append(index)
    return found


def _measurements(measures: dict[str, Any]) -> list[hd.sr.Measurement]:
    out = []
    for key, (name, unit, derivation) in MEASUREMENTS.items():
        value = measures.get(key)
        if value is None or not np.isfinite(float(value)):
            continue
        out.append(hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation))
    return out


def _evaluations(measures: dict[str, Any], verdict: str | None,
                 vertebra_verdict: str | None) -> list[hd.sr.QualitativeEvaluation]:
    out = []
    grade = measures.get("genant_grade")
    if measures.get("assessable") and grade is not None:
        out.append(hd.sr.QualitativeEvaluation(GENANT, GRADES[int(grade)]))
    else:
        out.append(hd.sr.QualitativeEvaluation(GENANT, NOT_ASSESSABLE))
    flag = measures.get("density_flag")
    if flag in DENSITY_FLAGS:
        out.append(hd.sr.QualitativeEvaluation(DENSITY_FLAG, DENSITY_FLAGS[flag]))
    if verdict in VERDICTS:
        out.append(hd.sr.QualitativeEvaluation(QUALITY, VERDICTS[verdict]))
    if vertebra_verdict in VERDICTS:
        out.append(hd.sr.QualitativeEvaluation(VERTEBRA_QUALITY, VERDICTS[vertebra_verdict]))
    return out


def _prior_items(change: dict[str, Any], prior: dict[str, Any]) -> tuple[list[hd.sr.Measurement],
                                                                         list[hd.sr.QualitativeEvaluation], list]:
    """The NUM, CODE and TEXT items of one compared vertebra's change since ``prior``."""
    numbers = [hd.sr.Measurement(name=name, value=float(change[key]), unit=unit)
               for key, (name, unit) in PRIOR_CHANGES.items() if change.get(key) is not None]
    codes_ = [hd.sr.QualitativeEvaluation(PRIOR_FLAGGED, PRIOR_FLAG_VALUES[bool(change.get("flagged"))])]
    texts = [_text(PRIOR_STUDY, f"{prior.get('name')} of {prior.get('date')}, {prior.get('interval_days')} days "
                                f"before (its run {prior.get('run_id')})")]
    texts += [_text(PRIOR_FLAG_TEXT, f"{key}: {text}") for key, text in (change.get("flags") or {}).items()]
    return numbers, codes_, texts


def vertebra_group(entry: dict[str, Any], *, segment_number: int, seg: pydicom.Dataset,
                   images: list[pydicom.Dataset], quality: dict[str, Any],
                   algorithm: hd.sr.AlgorithmIdentification, prior: dict[str, Any] | None = None) -> Group:
    """The TID 1411 group of one vertebra (``entry``: one of the summary's ``vertebrae``); with
    ``prior`` (one prior of ``services.prior_studies.prior_comparisons``) its change since then
    where the comparison covered this vertebra."""
    measures = {**entry.get("measures", {}), "volume_ml": entry.get("volume_ml")}
    name = label_name(int(entry["label"]))
    name_withheld = bool(measures.get("withheld"))
    value, meaning = GENERIC_VERTEBRA if name_withheld else snomed_code(int(entry["label"]))
    level = Code(value, "SCT", meaning)
    own = next((v for v in quality.get("vertebrae") or [] if v.get("name") == name), {})
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segment_number,
        source_images=[hd.sr.SourceImageForSegmentation(ds.SOPClassUID, ds.SOPInstanceUID) for ds in images])
    change = next((v for v in (prior or {}).get("vertebrae") or [] if v.get("name") == name and v.get("compared")),
                  None)
    numbers, evaluations, texts = _prior_items(change, prior) if change is not None else ([], [], [])
    group = Group(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=shown_name(name, name_withheld)),
        referenced_segment=segment, finding_type=level, finding_sites=[hd.sr.FindingSite(level)],
        algorithm_id=algorithm, measurements=_measurements(measures) + numbers,
        qualitative_evaluations=_evaluations(measures, quality.get("verdict"), own.get("verdict")) + evaluations)
    content = group[0].ContentSequence
    for item in texts:
        content.append(item)
    if name_withheld:
        content.append(_text(LEVEL_WITHHELD, f"level withheld (read as {name} by the model, not confirmed): "
                                             f"{measures.get('withheld')}"))
    if not (measures.get("assessable") and measures.get("genant_grade") is not None):
        reason = measures.get("not_assessable") or "not graded by this run (no height measurements)"
        content.append(_text(NOT_ASSESSABLE_REASON, str(reason)))
    for reason in [*(quality.get("reasons") or []), *(own.get("reasons") or [])]:
        content.append(_text(QUALITY_REASON, str(reason)))
    if measures.get("density_flag") or measures.get("genant_grade"):
        content.append(_text(FLAG_STATEMENT, FLAG_NOTE))
    return group


def build_measurement_report(summary: dict[str, Any], levels: np.ndarray, affine: np.ndarray,
                             levels_seg: pydicom.Dataset, sources: list[pydicom.Dataset], *,
                             model_id: str, prior: dict[str, Any] | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR of a run: ``summary`` (its summary JSON, with ``vertebrae`` and ``quality``),
    ``levels`` (the levels map, ``affine`` voxel -> RAS mm), the levels SEG made from it and the
    source CT slices (identifiers completed). ``InputError`` when the run has no vertebra or
    the SEG lacks one of them. ``prior``: the comparison with the newest prior study, when there
    is one (see ``vertebra_group``)."""
    vertebrae = summary.get("vertebrae") or []
    if not vertebrae:
        raise InputError("levels", "this run found no vertebra, so there is no measurement to report")
    numbers = segment_numbers(levels_seg)
    on_slices = slices_of_labels(np.asarray(levels), affine, sources)
    algorithm = hd.sr.AlgorithmIdentification(name="SpineSeg levels and measurements", version=model_id[:64])
    quality = summary.get("quality") or {}
    groups = []
    for entry in vertebrae:
        # The SEG's segment label (services.level_exports.segment_label); a SEG made before names
        # were withheld still has the plain level.
        name = label_name(int(entry["label"]))
        name = next((n for n in (shown_name(name, bool((entry.get("measures") or {}).get("withheld"))), name)
                     if n in numbers), name)
        if name not in numbers:
            raise InputError("levels_seg", f"the levels SEG has no segment {name!r}: it was not made from this run")
        images = [sources[i] for i in on_slices.get(int(entry["label"]), [])] or sources
        groups.append(vertebra_group(entry, segment_number=numbers[name], seg=levels_seg, images=images,
                                     quality=quality, algorithm=algorithm, prior=prior))
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="SpineSeg", manufacturer_name="SpineSeg", model_name=model_id[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, levels_seg], content=report[0], series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="SpineSeg",
        is_complete=True, is_final=False, is_verified=False, series_description="Vertebra measurements (SpineSeg)",
        software_versions=package_version(), manufacturer_model_name="SpineSeg")
    sr.CodingSchemeIdentificationSequence = [_scheme_identification()]
    return sr


def _scheme_identification() -> pydicom.Dataset:
    """The SOP Common module's declaration of the private scheme (PS3.3 C.12.1.1.7)."""
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "SpineSeg vertebra measurement concepts"
    item.CodingSchemeResponsibleOrganization = "SpineSeg"
    return item


def write_measurement_report(summary: dict[str, Any], levels: np.ndarray, affine: np.ndarray, levels_seg_path: Path,
                             dicom_folder: Path, series_uid: str | None, path: Path, *, model_id: str,
                             prior: dict[str, Any] | None = None) -> Path:
    """Write the run's TID 1500 SR to ``path`` (see ``build_measurement_report``)."""
    sources = source_slices(dicom_folder, series_uid)
    complete_identifiers(sources)
    seg = pydicom.dcmread(levels_seg_path, stop_before_pixels=True)
    if seg.get("StudyInstanceUID") != sources[0].StudyInstanceUID:
        raise InputError("levels_seg", "the levels SEG belongs to another study than the run's source series")
    sr = build_measurement_report(summary, levels, affine, seg, sources, model_id=model_id, prior=prior)
    path = save_dicom(sr, path)
    log.info("wrote a TID 1500 SR of %d vertebrae to %s", len(summary.get("vertebrae") or []), path)
    return path
