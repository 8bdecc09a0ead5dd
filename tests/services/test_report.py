"""The one-page report (services.report, services.report_pdf) of the report case: the HTML's
text, and the PDF on A4 and Letter read back with pypdf (one page, the paper's size, the same
facts): pseudonym and dates, key image, every vertebra with its values, withheld ratios and the
reasons, flags, the quality verdict, the model version and the statement on flags."""

from __future__ import annotations

import base64
import io
import re
from html import unescape

import pytest
from PIL import Image

from spineseg.errors import InputError
from spineseg.services.levels import withheld_labels
from spineseg.services.report import ReportFacts, key_image_png, render_report_html, study_date_of
from spineseg.services.report_pdf import render_report_pdf
from tests.services.ct_series import STUDY_DATE
from tests.services.report_case import ReportCase

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
PSEUDONYM = "SPS-0123456789abcdef"
MODEL_ID = "spineseg-test-v1"
PAPER_POINTS = {"a4": (595.28, 841.89), "letter": (612.0, 792.0)}


@pytest.fixture(scope="module")
def facts(report_case: ReportCase) -> ReportFacts:
    date, shifted = study_date_of(report_case.folder)
    png = key_image_png(report_case.volume.array, report_case.levels, report_case.volume.affine,
                        withheld_labels(report_case.summary))
    return ReportFacts(study_name="Study 5f3a CT lower thorax", pseudonym=PSEUDONYM, study_date=date,
                       dates_shifted=shifted, uploaded="2026-12-07T10:00:00+00:00", run_id="run-0001",
                       run_finished="2026-12-07T10:01:30+00:00", model_version=MODEL_ID,
                       summary=report_case.summary, key_image_png=png)


def _plain(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def expected_phrases(facts: ReportFacts) -> list[str]:
    """What any form of the report must say about ``facts``."""
    date = f"{STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-{STUDY_DATE[6:]}"
    phrases = [PSEUDONYM, date, MODEL_ID, "ok: the scan and the mask passed the checks", "not a diagnosis"]
    for v in facts.summary["vertebrae"]:
        m = v["measures"]
        # a vertebra that failed its checks is named only as withheld, with the level it was read as
        phrases.append(f"withheld (read as {v['name']})" if m.get("withheld") else v["name"])
        if not m.get("withheld") and m["hu_mean"] is not None:
            phrases.append(f"{m['hu_mean']:.1f} / {m['hu_median']:.1f}")
        if m["genant_grade"] is None:
            phrases.append(f"not assessable: {m['not_assessable']}")
        else:
            phrases.append(f"{m['ha_hp']:.2f} / {m['hm_hp']:.2f}")
        if m["density_flag"]:
            phrases.append(m["density_flag"])
    return phrases


def test_html_report_says_everything_once(facts: ReportFacts) -> None:
    html = render_report_html(facts)
    text = _plain(html)
    missing = [p for p in expected_phrases(facts) if p not in text]
    assert missing == [], missing
    ungraded = sum(v["measures"]["genant_grade"] is None for v in facts.summary["vertebrae"])
    assert text.count("withheld / withheld / withheld") == ungraded > 0
    failed = sum(bool(v["measures"].get("withheld")) for v in facts.summary["vertebrae"])
    assert text.count("withheld withheld withheld / withheld / withheld") == failed  # HU, heights, ratios
    assert "@page" in html and "<script" not in html  # prints; runs nothing
    numbered = {n: unescape(r) for n, r in re.findall(r"<li>\[(\d+)\] not assessable: (.*?)</li>", html)}
    cells = {unescape(re.sub(r"<[^>]+>| \(cut\)", "", name)).strip(): row
             for name, row in re.findall(r"<tr><th[^>]*>(.*?)</th>(.*?)</tr>", html, re.S)}
    assert sum(name.startswith("withheld (read as ") for name in cells) == failed > 0  # no level given as found
    for v in facts.summary["vertebrae"]:
        m = v["measures"]
        if m["genant_grade"] is None:  # the row points at its own reason
            shown = f"withheld (read as {v['name']})" if m.get("withheld") else v["name"]
            number = re.search(r"not assessable \[(\d+)\]", cells[shown]).group(1)
            assert numbered[number] == m["not_assessable"]
    src = re.search(r'id="report-key-image" src="data:image/png;base64,([^"]+)"', html).group(1)
    picture = Image.open(io.BytesIO(base64.b64decode(src)))
    assert picture.size[1] > 300 and picture.mode == "RGB"
    print(f"\nHTML report: {len(html) / 1e3:.0f} kB, key image {picture.size}")


@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_pdf_is_one_page_of_the_paper_with_the_same_facts(facts: ReportFacts, paper: str) -> None:
    from pypdf import PdfReader

    data = render_report_pdf(facts, paper)
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    page = reader.pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(PAPER_POINTS[paper], abs=0.1)
    text = " ".join(page.extract_text().split())
    missing = [p for p in expected_phrases(facts) if p not in text]
    assert missing == [], missing
    print(f"\nPDF {paper}: {len(data) / 1e3:.0f} kB, one page")


def test_an_unknown_paper_is_refused_naming_it(facts: ReportFacts) -> None:
    with pytest.raises(InputError, match="'legal' is not a paper size"):
        render_report_pdf(facts, "legal")


def test_a_report_without_vertebrae_or_picture_still_renders(facts: ReportFacts) -> None:
    empty = ReportFacts(study_name="s", pseudonym=None, study_date=None, dates_shifted=False, uploaded="2026-12-07",
                        run_id="r", run_finished=None, model_version=MODEL_ID, summary={})
    text = _plain(render_report_html(empty))
    assert "No vertebra was found in this run" in text and "none (the upload named no patient)" in text
    assert "not checked" in text and "not recorded" in text
    from pypdf import PdfReader

    assert len(PdfReader(io.BytesIO(render_report_pdf(empty, "letter"))).pages) == 1
