"""A run's reports: the DICOM SR measurement report (TID 1500) and the one-page report as HTML
and PDF, for the study's current run (``/api/studies/<id>/...``) and for any done run
(``/api/studies/<id>/runs/<run id>/...``). Thin over ``services.run_reports``; the run is
chosen, and the download audited, as for every other download (``routes.downloads``)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from spineseg.errors import InputError
from spineseg.services.report import render_report_html
from spineseg.services.report_pdf import render_report_pdf
from spineseg.services.run_reports import ensure_measurement_sr, report_facts
from spineseg.web.deps import CurrentUser, DbSession, Services
from spineseg.web.routes.downloads import Identity, RunTarget, _dicom_answer, chosen_target, current_target

router = APIRouter(prefix="/api/studies/{study_id}", tags=["downloads"])
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def report_policy(html: str) -> str:
    """The report page's own Content-Security-Policy (the service's default forbids inline
    styles): nothing may load or run; only its inline ``<style>`` (by hash) and ``data:`` pictures
    (the key image), so the same page works served here and saved as one file."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
                      for style in _STYLE.findall(html))
    styles = hashes or "'none'"
    return (f"default-src 'none'; style-src {styles}; img-src data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def _stem(target: RunTarget) -> str:
    return f"spineseg-{target.study.id[:8]}-{target.run.id[:8]}"


async def _work(function: Callable[..., object], *args: object) -> object:
    """``function(*args)`` off the event loop; a run that cannot have the output is a 404 saying why."""
    try:
        return await run_in_threadpool(function, *args)
    except InputError as exc:
        raise HTTPException(404, str(exc)) from exc


def add_report_routes(prefix: str, target_of: Callable[..., RunTarget], whose: str) -> None:
    target_type = Annotated[RunTarget, Depends(target_of)]

    def get(path: str, summary: str, media_type: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
        def register(endpoint: Callable[..., object]) -> Callable[..., object]:
            endpoint.__annotations__["target"] = target_type
            responses = {200: {"description": "the file", "content": {media_type: {"schema": {
                "type": "string", "format": "binary" if media_type != "text/html" else "html"}}}}}
            router.add_api_route(prefix + path, endpoint, methods=["GET"], summary=summary, responses=responses,
                                 response_class=HTMLResponse if media_type == "text/html" else Response)
            return endpoint
        return register

    @get("/measurements_sr.dcm", f"DICOM SR (TID 1500 Measurement Report) of the per-vertebra measurements, "
         f"referring to the levels SEG and the source images (DICOM input only), of {whose}", "application/dicom")
    async def measurement_sr(target: RunTarget, user: CurrentUser, session: DbSession, services: Services,
                             identity: Identity = "deidentified") -> Response:
        path = await _work(ensure_measurement_sr, target.study, target.run, target.files)
        # identity=original: the original patient and UIDs put back, as for the SEGs (issue 28 item 2)
        return await _dicom_answer(target, path, f"{_stem(target)}-measurements_sr.dcm", identity, user, session,
                                   services)

    @get("/report.html", f"The one-page report (HTML, prints on A4 and Letter) of {whose}", "text/html")
    async def report_html(target: RunTarget) -> HTMLResponse:
        facts = await _work(report_facts, target.study, target.run, target.files)
        html = render_report_html(facts)
        return HTMLResponse(html, headers={"Content-Security-Policy": report_policy(html)})

    @get("/report.pdf", f"The one-page report (PDF) of {whose}", "application/pdf")
    async def report_pdf(
        target: RunTarget,
        paper: Annotated[Literal["a4", "letter"], Query(description="paper size: a4 (default) or letter")] = "a4",
    ) -> Response:
        facts = await _work(report_facts, target.study, target.run, target.files)
        data = await _work(render_report_pdf, facts, paper)
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{_stem(target)}-report-{paper}.pdf"'})


add_report_routes("", current_target, "the study's current run")
add_report_routes("/runs/{run_id}", chosen_target, "one run")
