"""PACS over DICOMweb: the API (endpoints, QIDO-RS search, import of a series, sending a
study's result back) and the "Import from PACS" page. Thin over ``integrations.dicomweb``;
every search, import and send is audited there (or by the intake). A PACS that is down or
refuses our credentials is a 502 naming the endpoint; a series that is not CT a 422."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from spineseg.errors import InputError
from spineseg.integrations import PacsError
from spineseg.integrations.dicomweb import SeriesQuery, import_series, search, send_result
from spineseg.integrations.endpoints import load_endpoints
from spineseg.store.pacs_links import get_link
from spineseg.web.auth import csrf_matches
from spineseg.web.deps import CurrentUser, DbSession, NeedsDiskRoom, Services, Uploader, run_in_session
from spineseg.web.ownership import require_owner_or_admin
from spineseg.web.routes.api import load_study
from spineseg.web.routes.pages import render

router = APIRouter(tags=["pacs"])
PACS_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"description": "the PACS could not be reached, timed out or refused our credentials (said in `detail`)"}}


class ImportRequest(BaseModel):
    study_uid: str = Field(description="Study Instance UID of the series, as the search answered it")
    series_uid: str = Field(description="Series Instance UID to import (a CT series)")
    name: str = Field("", description="optional study name (default 'Study <short id> CT ...')")


def _pacs_http(exc: PacsError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


async def _call(work, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(work, *args, **kwargs)
    except PacsError as exc:
        raise _pacs_http(exc) from exc


@router.get("/api/pacs/endpoints", summary="The configured DICOMweb PACS endpoints (no credentials)")
def endpoints(_user: CurrentUser, services: Services) -> list[dict[str, object]]:
    return [e.public() for e in load_endpoints(services.settings.pacs_endpoints_file)]


@router.get("/api/pacs/{endpoint}/series", summary="QIDO-RS: search the PACS for series", responses=PACS_ERRORS)
async def search_series(
    endpoint: str, user: Uploader, services: Services,
    patient_id: Annotated[str, Query(description="Patient ID")] = "",
    accession_number: Annotated[str, Query(description="Accession Number")] = "",
    date: Annotated[str, Query(description="Study Date: 2026-11-24 or 2026-11-01..2026-11-30")] = "",
    modality: Annotated[str, Query(description="e.g. CT")] = "",
) -> list[dict[str, object]]:
    query = SeriesQuery(patient_id, accession_number, date, modality)
    return await _call(search, services, endpoint_name=endpoint, query=query, username=user.username)


@router.post("/api/pacs/{endpoint}/import", status_code=202, dependencies=[NeedsDiskRoom], responses=PACS_ERRORS,
             summary="WADO-RS: import one CT series as a new study (de-identified) and queue its segmentation")
async def import_from_pacs(endpoint: str, body: ImportRequest, user: Uploader, services: Services) -> JSONResponse:
    accepted = await _call(import_series, services, endpoint_name=endpoint, study_uid=body.study_uid,
                           series_uid=body.series_uid, username=user.username, user_id=user.user_id, name=body.name)
    return JSONResponse({"study_id": accepted.study_id, "job_id": accepted.job_id}, status_code=202,
                        headers={"Location": f"/api/jobs/{accepted.job_id}"})


@router.get("/api/studies/{study_id}/pacs", summary="Whether the study came from a PACS and what was sent back")
def study_pacs(study_id: str, _user: CurrentUser, session: DbSession) -> dict[str, object]:
    load_study(session, study_id)
    link = get_link(session, study_id=study_id)
    if link is None:
        return {"linked": False}
    return {"linked": True, "origin": link.origin, "endpoint": link.endpoint, "sent_run_id": link.sent_job_id,
            "send_error": link.send_error}


@router.post("/api/studies/{study_id}/pacs/send", responses=PACS_ERRORS,
             summary="STOW-RS: send the current run's DICOM SEG (and other DICOM outputs) back to the PACS (the "
                     "study's owner or an admin)")
async def send_to_pacs(study_id: str, user: Uploader, services: Services) -> dict[str, object]:
    await run_in_session(services, lambda session: require_owner_or_admin(load_study(session, study_id), user,
                                                                          "send to the PACS"))
    return await _call(send_result, services, study_id=study_id, username=user.username)


# --- the page -----------------------------------------------------------------------------------

@router.get("/pacs", include_in_schema=False)
async def import_page(request: Request, user: Uploader, services: Services, endpoint: str = "",
                      patient_id: str = "", accession_number: str = "", date: str = "",
                      modality: str = "CT") -> HTMLResponse:
    known = [e.public() for e in load_endpoints(services.settings.pacs_endpoints_file)]
    chosen = endpoint or (str(known[0]["name"]) if known else "")
    query = {"endpoint": chosen, "patient_id": patient_id, "accession_number": accession_number, "date": date,
             "modality": modality}
    rows, error = None, None
    if endpoint:  # the form was submitted
        try:
            rows = await run_in_threadpool(search, services, endpoint_name=endpoint,
                                           query=SeriesQuery(patient_id, accession_number, date, modality),
                                           username=user.username)
        except (PacsError, InputError) as exc:
            error = str(exc)
    return render(request, "pacs_import.html", user, endpoints=known, query=query, rows=rows, error=error)


@router.post("/pacs/import", dependencies=[NeedsDiskRoom], include_in_schema=False)
async def import_form(request: Request, user: Uploader, services: Services, endpoint: Annotated[str, Form()],
                      study_uid: Annotated[str, Form()], series_uid: Annotated[str, Form()],
                      csrf_token: Annotated[str, Form()] = "") -> Response:
    if not csrf_matches(request, csrf_token):
        raise HTTPException(403, "the form expired: reload the page and try again")
    try:
        accepted = await run_in_threadpool(import_series, services, endpoint_name=endpoint, study_uid=study_uid,
                                           series_uid=series_uid, username=user.username, user_id=user.user_id)
    except (PacsError, InputError) as exc:
        known = [e.public() for e in load_endpoints(services.settings.pacs_endpoints_file)]
        return render(request, "pacs_import.html", user, getattr(exc, "status", 422), endpoints=known,
                      query={"endpoint": endpoint, "modality": "CT"}, rows=None, error=str(exc))
    return RedirectResponse(f"/jobs/{accepted.job_id}", status_code=303)
