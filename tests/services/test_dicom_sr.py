"""The TID 1500 measurement SR of a run (services.dicom_sr) on a real CT written as a DICOM series
with whole, cut and flagged vertebrae: every value of the summary read back, the references to
the levels SEG's segments and to the source images, and the object checked by dciodvfy
(Debian's dicom3tools) and by highdicom's own reader."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from spineseg.errors import InputError
from spineseg.services.dicom_sr import build_measurement_report, write_measurement_report
from spineseg.services.level_exports import write_levels_dicom_seg
from spineseg.services.levels import withheld_labels
from tests.services.report_case import ReportCase
from tests.services.sr_reading import check_against_summary

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
MODEL_ID = "spineseg-test-v1"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, report_case: ReportCase) -> Iterator[tuple[ReportCase, Path, Path]]:
    root = tmp_path_factory.mktemp("sr")
    made = report_case
    seg = write_levels_dicom_seg(made.levels, made.volume.affine, made.folder, None, root / "levels_seg.dcm",
                                 model_id=MODEL_ID, withheld=withheld_labels(made.summary))
    sr = write_measurement_report(made.summary, made.levels, made.volume.affine, seg, made.folder, None,
                                  root / "sr.dcm", model_id=MODEL_ID)
    yield made, seg, sr


def test_every_value_and_reference_reads_back(case: tuple[ReportCase, Path, Path]) -> None:
    made, seg_path, sr_path = case
    sr, seg = pydicom.dcmread(sr_path), pydicom.dcmread(seg_path, stop_before_pixels=True)
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in made.folder.iterdir()}
    compared = check_against_summary(sr, seg, sources, made.summary, MODEL_ID)
    names = [v["name"] for v in made.summary["vertebrae"]]
    graded = [v["name"] for v in made.summary["vertebrae"] if v["measures"]["genant_grade"] is not None]
    print(f"\nSR of {len(names)} vertebrae ({', '.join(names)}; graded: {', '.join(graded)}): "
          f"{compared} numbers read back equal to the summary")
    # the case holds what the SR must tell apart: graded, not assessable (cut) and a density flag
    assert graded and len(graded) < len(names)
    assert any(v["measures"]["density_flag"] for v in made.summary["vertebrae"])
    first = pydicom.dcmread(next(made.folder.iterdir()), stop_before_pixels=True)
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == first.StudyInstanceUID
    assert sr.PatientID == seg.PatientID and sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence and sources <= evidence


def test_highdicom_reads_the_report_as_tid_1500(case: tuple[ReportCase, Path, Path]) -> None:
    made, _seg, sr_path = case
    report = hd.sr.srread(sr_path)
    groups = report.content.get_volumetric_roi_measurement_groups()
    # a vertebra whose name the quality checks withheld is identified as such, never by its level
    assert [g.tracking_identifier for g in groups] == [v["shown_name"] for v in made.summary["vertebrae"]]
    withheld = [v["name"] for v in made.summary["vertebrae"] if v["name_withheld"]]
    assert withheld and len(withheld) < len(groups)
    assert [g.tracking_identifier for g in groups if g.tracking_identifier.startswith("withheld")] == [
        f"withheld (read as {n})" for n in withheld]
    first = next(g for g in groups if g.get_measurements())
    assert first.referenced_segment is not None and first.finding_sites


def test_dciodvfy_finds_no_error(case: tuple[ReportCase, Path, Path]) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools; .ci/run does)")
    _made, seg_path, sr_path = case
    for path in (sr_path, seg_path):
        answer = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        lines = (answer.stdout + answer.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        print(f"\ndciodvfy {path.name}: {len(errors)} errors, {sum(line.startswith('Warning') for line in lines)} "
              "warnings")
        assert errors == [], "\n".join(errors)


def test_a_run_without_vertebrae_or_with_a_foreign_seg_is_refused(case: tuple[ReportCase, Path, Path],
                                                                  tmp_path: Path) -> None:
    made, seg_path, _sr = case
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    sources = [pydicom.dcmread(p) for p in sorted(made.folder.iterdir())]
    with pytest.raises(InputError, match="found no vertebra"):
        build_measurement_report({"vertebrae": []}, made.levels, made.volume.affine, seg, sources, model_id=MODEL_ID)
    seg.SegmentSequence = seg.SegmentSequence[1:]  # a SEG that lacks the first vertebra
    with pytest.raises(InputError, match="has no segment"):
        build_measurement_report(made.summary, made.levels, made.volume.affine, seg, sources, model_id=MODEL_ID)
