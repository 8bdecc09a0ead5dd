"""The one-page report of a run, as HTML (printable: ``@page`` for A4 and Letter) and as the
facts the PDF writer (``services.report_pdf``) lays out from the same rows.

Fed by the run's summary (``vertebrae``, ``quality``, ``levels``) and the study's identity as
stored (pseudonym, the study date as the de-identified series carries it), never recomputed:
the page, the CSV, the SR and this report show the same numbers. The template lives beside this
module (``report_templates/``) so the service renders a report without the web layer.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydicom.errors import InvalidDicomError

from spineseg.imaging.key_image import sagittal_key_image
from spineseg.metrics.vertebra_measures import FLAG_NOTE
from spineseg.model.level_ids import colour, label_name
from spineseg.services.levels import shown_name

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("report_templates")
STATEMENT = ("Flags apply published thresholds (L1 trabecular HU: Pickhardt et al. 2013; height ratios: Genant et "
             "al. 1993) to automatic measurements: " + FLAG_NOTE + ". The report does not replace reading the scan.")
GRADE_TEXT = {0: "0 (normal)", 1: "1 (mild)", 2: "2 (moderate)", 3: "3 (severe)"}
WITHHELD = "withheld"
VERDICT_TEXT = {"ok": "ok: the scan and the mask passed the checks", "review": "review: check before relying on it",
                "not assessable": "not assessable: do not rely on it without reading the scan"}


@dataclass(frozen=True)
class ReportFacts:
    """What one report shows. ``prior``: the comparison with a prior study, when one is made
    (issue 33 item 3; ``None`` until then, and the report says so)."""

    study_name: str
    pseudonym: str | None
    study_date: str | None  # YYYY-MM-DD as stored
    dates_shifted: bool  # de-identification moved the dates (the same shift for a patient's studies)
    uploaded: str
    run_id: str
    run_finished: str | None
    model_version: str
    summary: dict[str, Any]
    key_image_png: bytes | None = None
    prior: dict[str, Any] | None = field(default=None)


def study_date_of(input_path: Path) -> tuple[str | None, bool]:
    """(Study Date as YYYY-MM-DD, whether de-identification shifted it) from the stored DICOM
    series at ``input_path``; (None, False) for other inputs or a series without a date."""
    folder = Path(input_path)
    if not folder.is_dir():
        return None, False
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError):
            continue
        text = str(ds.get("StudyDate", "") or ds.get("SeriesDate", "") or "")
        shifted = str(ds.get("LongitudinalTemporalInformationModified", "")) == "MODIFIED"
        if len(text) == 8 and text.isdigit():
            return f"{text[:4]}-{text[4:6]}-{text[6:]}", shifted
        return None, shifted
    return None, False


def key_image_png(hu: np.ndarray, levels: np.ndarray, affine: np.ndarray, withheld: set[int] = frozenset()) -> bytes:
    """The sagittal key image with the levels, as PNG bytes; a vertebra in ``withheld`` is marked
    "T7?" (its name withheld: the table beside says why) instead of its level."""
    def name(label: int) -> str:
        return f"{label_name(label)}?" if label in withheld else label_name(label)
    buffer = io.BytesIO()
    sagittal_key_image(hu, levels, affine, colour, name).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _number(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def not_assessable_reasons(summary: dict[str, Any]) -> list[str]:
    """The distinct reasons why vertebrae are not assessable, in the order they first occur
    (the table refers to them by number: one reason shared by many vertebrae is printed once)."""
    reasons: list[str] = []
    for v in summary.get("vertebrae") or []:
        m = v.get("measures") or {}
        if not (m.get("assessable") and m.get("genant_grade") is not None):
            reason = str(m.get("not_assessable") or "no height measurements")
            if reason not in reasons:
                reasons.append(reason)
    return reasons


def report_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row of text per vertebra (top to bottom): level, HU, heights, ratios, grade, flags,
    quality verdict. Values withheld (the vertebra failed its quality checks: ``withheld``, or the
    height gate: the ratios) read "withheld"; the grade "not assessable [n]" refers to reason n of
    ``not_assessable_reasons``."""
    quality = {v.get("name"): v for v in (summary.get("quality") or {}).get("vertebrae") or []}
    reasons = not_assessable_reasons(summary)
    rows = []
    for v in summary.get("vertebrae") or []:
        m = v.get("measures") or {}
        graded = bool(m.get("assessable")) and m.get("genant_grade") is not None
        ratios = " / ".join(_number(m.get(k), 2) if graded else WITHHELD for k in ("ha_hp", "hm_hp", "hp_neighbours"))
        grade = GRADE_TEXT.get(int(m["genant_grade"]), str(m["genant_grade"])) if graded else \
            f"not assessable [{reasons.index(str(m.get('not_assessable') or 'no height measurements')) + 1}]"
        flags = [f"HU: {m['density_flag']}" for _ in [0] if m.get("density_flag")]
        flags += [f"height: {m['height_flag']}" for _ in [0] if m.get("height_flag")]
        own = quality.get(v.get("name"), {})
        withheld = bool(m.get("withheld"))
        rows.append({
            "level": shown_name(str(v.get("name")), withheld) + ("" if v.get("complete", True) else " (cut)"),
            "hu": WITHHELD if withheld else f"{_number(m.get('hu_mean'))} / {_number(m.get('hu_median'))}",
            "heights": WITHHELD if withheld else " / ".join(
                _number(m.get(k)) for k in ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")),
            "ratios": ratios, "grade": grade, "flags": "; ".join(flags) or "none",
            "quality": own.get("verdict") or m.get("quality") or "–",
        })
    return rows


def prior_text(comparisons: dict[str, Any]) -> dict[str, Any] | None:
    """``services.prior_studies.prior_comparisons``' result as the report's lines, one per prior
    (oldest first): its date, the interval, the levels compared and those flagged with their
    flags; ``None`` when the study has no prior."""
    lines = []
    for prior in comparisons.get("priors") or []:
        head = f"{prior.get('name')} of {prior.get('date')} ({prior.get('interval_days')} days before)"
        compared = [v["name"] for v in prior.get("vertebrae") or [] if v.get("compared")]
        if not compared:
            lines.append(f"{head}: not compared ({prior.get('reason') or 'no level matched in both studies'})")
            continue
        flagged = [f"{v['name']} ({', '.join(k.replace('_', ' ') for k in v['flags'])})"
                   for v in prior["vertebrae"] if v.get("flagged")]
        lines.append(f"{head}: compared {', '.join(compared)}; "
                     + (f"flagged: {'; '.join(flagged)}" if flagged else "no level flagged"))
    return {"lines": lines, "text": " · ".join(lines)} if lines else None


def report_context(facts: ReportFacts) -> dict[str, Any]:
    """Everything the HTML template and the PDF writer show, as text."""
    quality = facts.summary.get("quality") or {}
    levels = facts.summary.get("levels") or {}
    return {
        "title": "Spine measurements (SpineSeg)",
        "study_name": facts.study_name, "pseudonym": facts.pseudonym or "none (the upload named no patient)",
        "study_date": (facts.study_date or "not recorded") + (" (shifted by de-identification)"
                                                              if facts.study_date and facts.dates_shifted else ""),
        "uploaded": facts.uploaded[:10], "run_id": facts.run_id,
        "run_finished": (facts.run_finished or "")[:16].replace("T", " ") or "–",
        "model_version": facts.model_version,
        "verdict": VERDICT_TEXT.get(quality.get("verdict"), "not checked (made before the quality checks existed)"),
        "quality_reasons": list(quality.get("reasons") or []),
        "naming": ("named from " + ", ".join(levels.get("anchors") or [])) if levels.get("named") else
                  ("not named: " + (levels.get("reason") or "no anchor in view")),
        "rows": report_rows(facts.summary),
        "reasons": not_assessable_reasons(facts.summary),
        "statement": STATEMENT,
        "prior": facts.prior,
        "key_image": facts.key_image_png,
    }


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def render_report_html(facts: ReportFacts) -> str:
    """The report as one self-contained HTML page (the key image inline)."""
    context = report_context(facts)
    image = context.pop("key_image")
    context["key_image_src"] = "data:image/png;base64," + base64.b64encode(image).decode() if image else None
    return _environment().get_template("report.html").render(**context)
