"""Issue 33 item 4: a prior from a shared case (P1, ts-abdomen) and follow-ups of the same case
seen through another field of view (cropped at the sides and the front, the patient 12/-30/47 mm
elsewhere), one of them with L3's body crushed to 65 % of its height on purpose. The real
pipeline (production model, levels, measurements) measures each; the comparison must flag
exactly L3, and nothing in the normal follow-up. Then the same runs as three studies of one
patient in the real app: the API, the CSV and the result page show it."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.imaging.io import load_volume
from spineseg.metrics.prior_change import compare_with_prior
from spineseg.model.inference import segment
from spineseg.services.levels import compute_levels, levels_summary
from spineseg.store.database import Database
from spineseg.store.models import Job, Study
from tests.conftest import CASES
from tests.prior_scans import compress_body, other_field_of_view
from tests.web.chromium import CHROMIUM
from tests.web.conftest import WebEnv
from tests.web.live_server import LiveServer
from tests.web.web_helpers import PASSWORD, add_user, bearer, make_settings, register_test_model

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

CASE = CASES / "ts-abdomen"
L3_TOTALSEGMENTATOR = 29
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
FOLLOW_UP_VIEW = {"crop_mm": ((9, 6), (6, 3), (0, 0)), "table_mm": (12.0, -30.0, 47.0)}


def _measured(volume) -> dict:
    seg = segment(volume)
    levels, rows = compute_levels(seg.mask, volume.array, volume.affine)
    return levels_summary(levels, rows) | {"intensity": volume.provenance.intensity, "quality": {"verdict": "ok"}}


@pytest.fixture(scope="module")
def summaries() -> dict[str, dict]:
    if not CASE.is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    ct = load_volume(CASE / "ct.nii.gz")
    labels = np.asarray(nib.load(str(CASE / "labels_fast.nii.gz")).dataobj).astype(np.int16)
    crushed = compress_body(ct, labels, L3_TOTALSEGMENTATOR, keep=0.65)
    return {"prior": _measured(ct), "normal": _measured(other_field_of_view(ct, **FOLLOW_UP_VIEW)),
            "crushed": _measured(other_field_of_view(crushed, **FOLLOW_UP_VIEW))}


def test_exactly_the_crushed_vertebra_is_flagged(summaries):
    result = compare_with_prior(summaries["prior"], summaries["crushed"], interval_days=371)
    assert result.flagged == ["L3"], result.to_json()
    l3 = next(v for v in result.vertebrae if v.name == "L3")
    assert "height_loss" in l3.flags and min(d for d in l3.height_change_mm if d is not None) <= -8.0
    compared = [v.name for v in result.vertebrae if v.compared]
    assert {"L1", "L2", "L4", "L5"} <= set(compared)  # its neighbours were compared, and not flagged


def test_a_normal_follow_up_flags_nothing(summaries):
    result = compare_with_prior(summaries["prior"], summaries["normal"], interval_days=371)
    assert result.flagged == [] and {"L1", "L2", "L3", "L4", "L5"} <= set(result.to_json()["compared"])
    assert all(v.position.share < 0.5 for v in result.vertebrae if v.compared)


def _study(session, study_id: str, summary: dict, created: datetime, pseudonym: str) -> None:
    session.add(Study(id=study_id, name=f"Study {study_id[:6]}", input_kind="nifti", input_path="/nonexistent",
                      truth_path=None, created_at=created, patient_pseudonym=pseudonym, pinned_job_id=study_id + "r",
                      summary=summary, model_id="m"))
    session.add(Job(id=study_id + "r", study_id=study_id, kind="segment", status="done", progress=1.0, stage="done",
                    model_version="m", output_dir=f"runs/{study_id}r", summary=summary, created_at=created,
                    finished_at=created))


def test_the_api_the_csv_and_the_page_show_the_change(summaries, web_env: WebEnv):
    """Three studies of one patient (no study dates: NIfTI input, so ordered by upload time),
    the crushed follow-up uploaded last: it is compared with both earlier ones."""
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with Database(web_env.settings.sqlalchemy_url).session() as session:
        _study(session, "a" * 31 + "1", summaries["prior"], start, "SPS-PRIOR-TEST")
        _study(session, "a" * 31 + "2", summaries["normal"], start + timedelta(days=200), "SPS-PRIOR-TEST")
        _study(session, "a" * 31 + "3", summaries["crushed"], start + timedelta(days=371), "SPS-PRIOR-TEST")
    headers = bearer(web_env.tokens["viewer"])
    answer = web_env.client.get(f"/api/studies/{'a' * 31}3/priors", headers=headers)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["date_basis"] == "upload time" and [s["role"] for s in data["studies"]] == ["prior", "prior", "this"]
    assert [p["interval_days"] for p in data["priors"]] == [371, 171]
    assert [p["flagged"] for p in data["priors"]] == [["L3"], ["L3"]]
    middle = web_env.client.get(f"/api/studies/{'a' * 31}2/priors", headers=headers).json()
    assert [s["role"] for s in middle["studies"]] == ["prior", "this", "later"] and middle["priors"][0]["flagged"] == []

    rows = list(csv.DictReader(io.StringIO(web_env.client.get(f"/api/studies/{'a' * 31}3/priors.csv",
                                                                headers=headers).text)))
    assert sorted({r["level"] for r in rows if r["flagged"] == "true"}) == ["L3"]
    l3 = next(r for r in rows if r["level"] == "L3" and r["prior_study"].endswith("1"))
    assert float(l3["anterior_change_mm"]) < 0 and "height" in l3["flags"]

    page = web_env.client.get(f"/studies/{'a' * 31}3", headers=headers)
    assert page.status_code == 200
    assert "Prior studies" in page.text and re.search(r"Flagged: L3\b", page.text)
    assert page.text.count("Flagged:") == 2 and "371 days before" in page.text
    unknown = web_env.client.get(f"/api/studies/{'a' * 31}3/priors?run=nope", headers=headers)
    assert unknown.status_code == 404 and "no done run" in unknown.text


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_the_result_page_in_a_browser(summaries, browser, tmp_path):
    """The real ``spineseg serve``: the follow-up's page shows the prior, the interval and the
    flagged row, and nothing flagged in its other rows."""
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    add_user(settings, "pia", "clinician")
    server = LiveServer(settings.data_dir)
    server.start()
    try:
        start = datetime(2025, 11, 3, 8, 30, tzinfo=UTC)
        with Database(settings.sqlalchemy_url).session() as session:
            _study(session, "b" * 31 + "1", summaries["prior"], start, "SPS-BROWSER")
            _study(session, "b" * 31 + "2", summaries["crushed"], start + timedelta(days=371), "SPS-BROWSER")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server.url}/studies/{'b' * 31}2")
        page.fill("input[name=username]", "pia")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        table = page.locator("table.prior-changes")
        table.wait_for()
        assert page.locator(".prior-flagged").inner_text() == "Flagged: L3"
        assert "371 days before" in page.locator("h3", has_text="Since").inner_text()
        assert table.locator("tr.flagged").count() == 1
        assert table.locator("tr.flagged th").inner_text() == "L3"
        assert "height lost" in table.locator("tr.flagged").inner_text()
        if SCREENSHOT_DIR:
            page.set_viewport_size({"width": 2400, "height": 1400})  # the table sits in the page's side column
            page.locator("#prior-studies").screenshot(path=str(Path(SCREENSHOT_DIR) / "prior-changes.png"))
        page.close()
    finally:
        server.stop()
