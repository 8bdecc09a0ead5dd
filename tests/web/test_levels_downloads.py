"""A finished study's per-vertebra outputs through the API: levels.nii.gz, the names and
colours JSON, the measurement CSV, the per-vertebra STL zip and the per-vertebra DICOM SEG."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from tests.web.conftest import WebEnv
from tests.web.test_api_studies import dicom_parts, wait_for_job
from tests.web.web_helpers import bearer


def test_dicom_study_offers_every_level_output(web_env: WebEnv, shared_cases: Path) -> None:
    token = web_env.tokens["clinician"]
    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    ids = web_env.client.post("/api/studies", files=dicom_parts(folder), headers=bearer(token)).json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    downloads = study["downloads"]
    assert {"levels", "levels_colours", "vertebrae_csv", "vertebrae_stl", "levels_seg", "rtstruct"} <= set(downloads)

    response = web_env.client.get(downloads["levels"], headers=bearer(token))
    assert response.status_code == 200
    levels = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    assert levels.shape == (512, 512, 20)
    labels = sorted(int(v) for v in np.unique(np.asarray(levels.dataobj)) if v > 0)

    colours = web_env.client.get(downloads["levels_colours"], headers=bearer(token)).json()
    assert [entry["label"] for entry in colours["labels"]] == sorted(labels, key=labels.index)
    assert all(len(entry["rgb"]) == 3 and entry["name"] for entry in colours["labels"])
    assert len(study["summary"]["vertebrae"]) == len(labels)
    assert study["summary"]["levels"]["named"] in (True, False)
    if not study["summary"]["levels"]["named"]:
        assert study["summary"]["levels"]["reason"]

    table = web_env.client.get(downloads["vertebrae_csv"], headers=bearer(token))
    assert table.status_code == 200
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == len(labels) and "hu_mean" in table.text.splitlines()[0]

    stl = web_env.client.get(downloads["vertebrae_stl"], headers=bearer(token))
    seg = web_env.client.get(downloads["levels_seg"], headers=bearer(token))
    if labels:
        assert stl.status_code == 200
        assert len(zipfile.ZipFile(io.BytesIO(stl.content)).namelist()) == len(labels)
        assert seg.status_code == 200, seg.text
        dataset = pydicom.dcmread(io.BytesIO(seg.content))
        assert dataset.Modality == "SEG" and len(dataset.SegmentSequence) == len(labels)
        assert all(item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
                   for item in dataset.SegmentSequence)
        rt = web_env.client.get(downloads["rtstruct"], headers=bearer(token))
        assert rt.status_code == 200
        structures = pydicom.dcmread(io.BytesIO(rt.content))
        assert structures.Modality == "RTSTRUCT" and len(structures.StructureSetROISequence) == len(labels)
    else:  # an untrained model may find no vertebra: a clear refusal, never a 500
        assert stl.status_code in (404, 422) and seg.status_code in (404, 422)

    run_url = study["runs"][-1]["downloads"]["levels"]
    assert "/runs/" in run_url and web_env.client.get(run_url, headers=bearer(token)).status_code == 200


def test_result_page_partial_lists_each_vertebra_with_its_flags() -> None:
    from spineseg.web.app import make_templates

    template = make_templates().env.get_template("_vertebrae.html")
    measures = {"hu_mean": 104.2, "hu_median": 101.0, "height_anterior_mm": 15.0, "height_middle_mm": 24.0,
                "height_posterior_mm": 25.0, "ha_hp": 0.6, "hm_hp": 0.96, "hp_neighbours": 1.0,
                "density_flag": "osteoporosis range (L1 <= 110 HU)", "height_flag": "severe (> 40 % reduction)"}
    summary = {"levels": {"named": True, "anchors": ["sacrum"], "reason": None},
               "vertebrae": [{"name": "L1", "label": 20, "confidence": 0.8, "volume_ml": 50.0, "complete": True,
                              "measures": measures},
                             {"name": "L2", "label": 21, "confidence": 0.82, "volume_ml": 55.0, "complete": False,
                              "measures": {"genant_grade": None, "assessable": False,
                                           "not_assessable": "body cut by the edge of the scan (field of view)"}}]}
    html = template.render(s=summary)
    assert html.count("<tr data-label=") == 2 and "(cut)" in html
    assert "height: not assessable (body cut by the edge of the scan (field of view))" in html
    assert "HU: osteoporosis range" in html and "height: severe" in html and "not a diagnosis" in html
    assert template.render(s={}).strip() == ""  # a run without levels shows no table
