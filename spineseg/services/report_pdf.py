"""The one-page report as PDF, written with fpdf2 (pure Python: the service needs no browser and
no system library to serve it), from the same context as the HTML (``services.report``).

Paper: A4 (210 x 297 mm) or US Letter (215.9 x 279.4 mm); the layout uses a 186 mm wide column
and shrinks the table's font when many vertebrae would push it past one page.
"""

from __future__ import annotations

import io
from typing import Any

from fpdf import FPDF
from fpdf.fonts import FontFace

from spineseg.errors import InputError
from spineseg.services.report import ReportFacts, report_context

PAPERS = {"a4": "A4", "letter": "Letter"}
MARGIN_MM = 12.0
WIDTH_MM = 186.0
IMAGE_WIDTH_MM = 70.0
COLUMNS = (("Level", "level", 16), ("Trab. HU mean / median", "hu", 24), ("Heights A/M/P (mm)", "heights", 26),
           ("Ha/Hp / Hm/Hp / Hp/nb", "ratios", 34), ("Genant grade", "grade", 30), ("Flags", "flags", 32),
           ("Quality", "quality", 24))


def check_paper(paper: str) -> str:
    if paper.lower() not in PAPERS:
        raise InputError("paper", f"{paper!r} is not a paper size this report prints on; choose a4 or letter")
    return PAPERS[paper.lower()]


def _latin(text: Any) -> str:
    """Text in the PDF core fonts' Latin-1 (dashes and signs written plainly)."""
    plain = str(text).replace("–", "-").replace("—", "-").replace("≤", "<=").replace("≥", ">=")
    return plain.encode("latin-1", "replace").decode("latin-1")


def _identity(pdf: FPDF, context: dict[str, Any]) -> None:
    pairs = (("Study", context["study_name"]), ("Patient pseudonym", context["pseudonym"]),
             ("Study date", context["study_date"]), ("Uploaded", context["uploaded"]),
             ("Run", f"{context['run_id']} (finished {context['run_finished']})"),
             ("Model version", context["model_version"]))
    for label, value in pairs:
        pdf.set_font("helvetica", "B", 9)
        pdf.cell(34, 4.6, _latin(label))
        pdf.set_font("helvetica", "", 9)
        pdf.multi_cell(WIDTH_MM - 34, 4.6, _latin(value), new_x="LMARGIN", new_y="NEXT")


def _heading(pdf: FPDF, text: str, x: float | None = None) -> None:
    if x is not None:
        pdf.set_x(x)
    pdf.set_font("helvetica", "B", 10.5)
    pdf.cell(0, 6, _latin(text), new_x="LMARGIN" if x is None else "LEFT", new_y="NEXT")


def _side(pdf: FPDF, context: dict[str, Any], x: float) -> None:
    width = WIDTH_MM - (x - MARGIN_MM)
    _heading(pdf, "Quality", x)
    pdf.set_font("helvetica", "B", 9)
    pdf.multi_cell(width, 4.4, _latin(context["verdict"]), new_x="LEFT", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)
    for reason in context["quality_reasons"]:
        pdf.multi_cell(width, 4.4, _latin("- " + reason), new_x="LEFT", new_y="NEXT")
    _heading(pdf, "Levels", x)
    pdf.set_font("helvetica", "", 9)
    pdf.multi_cell(width, 4.4, _latin(context["naming"]), new_x="LEFT", new_y="NEXT")
    _heading(pdf, "Prior study", x)
    pdf.set_font("helvetica", "", 9)
    lines = context["prior"]["lines"] if context["prior"] else ["No prior study of this patient on this server."]
    for line in lines:
        pdf.multi_cell(width, 4.4, _latin(("- " if context["prior"] else "") + line), new_x="LEFT", new_y="NEXT")


def _table(pdf: FPDF, rows: list[dict[str, str]]) -> None:
    size = 8.0 if len(rows) <= 14 else 7.0 if len(rows) <= 20 else 6.0
    pdf.set_font("helvetica", "", size)
    with pdf.table(col_widths=[w for _, _, w in COLUMNS], width=WIDTH_MM, line_height=size * 0.45,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
                   text_align="LEFT", first_row_as_headings=True) as table:
        table.row([_latin(title) for title, _, _ in COLUMNS])
        for row in rows:
            table.row([_latin(row[key]) for _, key, _ in COLUMNS])


def render_report_pdf(facts: ReportFacts, paper: str = "a4") -> bytes:
    """The report as PDF bytes on ``paper`` (``a4`` or ``letter``; ``InputError`` otherwise)."""
    context = report_context(facts)
    pdf = FPDF(orientation="P", unit="mm", format=check_paper(paper))
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(True, margin=MARGIN_MM)
    pdf.set_title(_latin(f"{context['title']}: {context['study_name']}"))
    pdf.set_creator("SpineSeg")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(0, 8, _latin(context["title"]), new_x="LMARGIN", new_y="NEXT")
    _identity(pdf, context)
    top = pdf.get_y() + 2
    bottom = top
    side_x = MARGIN_MM
    if context["key_image"]:
        image = pdf.image(io.BytesIO(context["key_image"]), x=MARGIN_MM, y=top, w=IMAGE_WIDTH_MM)
        bottom = top + image.rendered_height
        side_x = MARGIN_MM + IMAGE_WIDTH_MM + 4
    pdf.set_xy(side_x, top)
    _side(pdf, context, side_x)
    pdf.set_xy(MARGIN_MM, max(bottom, pdf.get_y()) + 2)
    _heading(pdf, "Vertebrae")
    if context["rows"]:
        _table(pdf, context["rows"])
        pdf.set_font("helvetica", "", 7.5)
        for number, reason in enumerate(context["reasons"], start=1):
            pdf.multi_cell(WIDTH_MM, 3.4, _latin(f"[{number}] not assessable: {reason}"), new_x="LMARGIN",
                           new_y="NEXT")
    else:
        pdf.set_font("helvetica", "", 9)
        pdf.multi_cell(WIDTH_MM, 4.6, "No vertebra was found in this run, so there is nothing to measure.",
                       new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("helvetica", "B", 9)
    pdf.multi_cell(WIDTH_MM, 4.6, _latin(context["statement"]), border=1, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
