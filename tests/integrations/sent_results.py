"""What SpineSeg sent to the test Orthanc, read back through Orthanc's REST API: the spine SEG,
the levels SEG and the measurement SR, each as the PACS holds it, and the SR checked value by
value against the run's summary (tests.services.sr_reading), its references mapped back to the
original series."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pydicom

from tests.integrations.thorax import PATIENT_ID, SERIES_UID, STUDY_UID
from tests.services.sr_reading import check_against_summary

SPINE_SEG, LEVELS_SEG, MEASUREMENT_SR = ("Spine segmentation (SpineSeg)", "Vertebrae (SpineSeg levels)",
                                         "Vertebra measurements (SpineSeg)")
# What a run of the shipped model on the thorax series sends at least: it finds one vertebra
# there, so the SEG goes with the levels SEG and the measurement SR (services.dicom_sr); an
# RTSTRUCT goes too once the job's exports have made it (services.run_exports).
AT_LEAST_SENT = ("SEG", "SEG", "SR")


def sends_the_report(modalities: list[str]) -> bool:
    """Whether a send's modalities hold the SEG first, then the levels SEG and the SR."""
    rest = list(modalities[1:])
    return modalities[:1] == ["SEG"] and all(rest.count(m) >= AT_LEAST_SENT[1:].count(m) for m in ("SEG", "SR"))


def sent_results(orthanc: httpx.Client, study_uid: str = STUDY_UID) -> dict[str, pydicom.Dataset]:
    """Every SEG and SR instance of the study in Orthanc, by series description."""
    found = {}
    for modality in ("SEG", "SR"):
        query = {"Level": "Instance", "Query": {"Modality": modality, "StudyInstanceUID": study_uid}}
        for instance in orthanc.post("/tools/find", json=query).json():
            ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file").content))
            found[str(ds.SeriesDescription)] = ds
    return found


def check_sent_report(sent: dict[str, pydicom.Dataset], summary: dict[str, Any], model_id: str, *,
                      study_uid: str = STUDY_UID, patient_id: str = PATIENT_ID,
                      originals: set[str] | None = None) -> int:
    """The SR in the PACS: filed in the original study under the original patient, every value
    equal to ``summary``'s, referring to the levels SEG sent with it and to the original images
    (``originals``: their SOP Instance UIDs; default the thorax series'). Returns how many
    numbers were compared."""
    sr = sent[MEASUREMENT_SR]
    assert sr.StudyInstanceUID == study_uid and sr.PatientID == patient_id and "PatientIdentityRemoved" not in sr
    originals = originals if originals is not None else {f"{SERIES_UID}.{i}" for i in range(1, 21)}
    return check_against_summary(sr, sent[LEVELS_SEG], originals, summary, model_id)
