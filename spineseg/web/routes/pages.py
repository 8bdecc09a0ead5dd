"""Server-rendered pages: login, upload, job progress, result with the viewer, study list,
evaluation. Pages call the same store functions as the API; forms carry the CSRF token."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from spineseg.services.evaluation import TABLE_KEYS, mean_and_sd, volume_agreement
from spineseg.services.evaluation_levels import levels_overview, vertebra_names
from spineseg.services.evaluation_truth import evaluated_scores
from spineseg.services.original_series import original_offer
from spineseg.services.prior_studies import prior_comparisons
from spineseg.services.runs import evaluated_versions, find_run, shown_run
from spineseg.store import accounts
from spineseg.store.studies import StudyFilter, get_job, list_studies, model_ids
from spineseg.web.auth import Principal, csrf_matches, csrf_token, log_in, log_out
from spineseg.web.deps import CurrentUser, DbSession, FreesDisk, Researcher, Services, Uploader
from spineseg.web.routes.api import _parse_date, cancel_study_job, discard_study, job_json, load_study, study_json
from spineseg.web.routes.evaluation import case_rows

router = APIRouter(include_in_schema=False)

STATUSES = ("queued", "running", "done", "failed", "cancelled")


def render(request: Request, template: str, user: Principal | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {"user": user, "csrf": csrf_token(request), **context},
                                      status_code=status_code)


def _safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect)."""
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or urlsplit(target).netloc):  # a backslash: browsers read /\evil as //evil
        return "/studies"
    return target


@router.get("/login")
def login_page(request: Request, session: DbSession, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", None, next=_safe_next(next), error=None,
                  no_account_yet=not accounts.any_user_exists(session))


@router.post("/login")
def login(request: Request, session: DbSession, username: Annotated[str, Form()],
          password: Annotated[str, Form()], csrf_token: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/studies") -> Response:
    if not csrf_matches(request, csrf_token):
        return render(request, "login.html", None, 403, next=_safe_next(next),
                      error="the form expired: please try again")
    throttle = request.app.state.login_throttle
    address = request.client.host if request.client else None
    wait_s = math.ceil(throttle.retry_after(username, address))
    if wait_s > 0:
        refused = render(request, "login.html", None, 429, next=_safe_next(next),
                         error=f"too many failed logins: try again in {wait_s} s")
        refused.headers["Retry-After"] = str(wait_s)
        return refused
    user = accounts.authenticate(session, username=username, password=password)
    if user is None:
        throttle.failed(username, address)
        accounts.record(session, username=username[:64], action="login.failed")
        return render(request, "login.html", None, 401, next=_safe_next(next), error="wrong username or password")
    throttle.succeeded(username)
    log_in(request, user, session)
    accounts.record(session, username=user.username, action="login")
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, user: CurrentUser, session: DbSession) -> Response:
    log_out(request, session)
    accounts.record(session, username=user.username, action="logout")
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(user: CurrentUser) -> Response:
    return RedirectResponse("/studies", status_code=303)


@router.get("/upload")
def upload_page(request: Request, user: Uploader, services: Services) -> HTMLResponse:
    return render(request, "upload.html", user, model_id=services.registry.production_id(),
                  max_upload_mb=services.settings.max_upload_bytes // 2**20)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, user: CurrentUser, session: DbSession) -> HTMLResponse:
    job = get_job(session, job_id=job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return render(request, "job.html", user, job=job_json(session, job), study=job.study)


@router.post("/jobs/{job_id}/cancel")
def cancel_from_page(job_id: str, user: Uploader, session: DbSession) -> Response:
    cancel_study_job(session, job_id, user)
    accounts.record(session, username=user.username, action="cancel", target=job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/studies")
def studies_page(request: Request, user: CurrentUser, session: DbSession, q: str = "", status: str = "",
                 model: str = "", date_from: str = "", date_to: str = "") -> HTMLResponse:
    filters = StudyFilter(search=q or None, status=status or None, model_id=model or None,
                          created_from=_parse_date(date_from, "date_from"), created_to=_parse_date(date_to, "date_to"))
    rows = [study_json(session, s, full=False) for s in list_studies(session, filters=filters)]
    accounts.record(session, username=user.username, action="study.list", detail=f"{len(rows)} studies")
    return render(request, "studies.html", user, studies=rows, statuses=STATUSES, models=model_ids(session),
                  query={"q": q, "status": status, "model": model, "date_from": date_from, "date_to": date_to})


@router.get("/studies/{study_id}")
def result_page(request: Request, study_id: str, user: CurrentUser, session: DbSession, services: Services,
                run: str = "") -> HTMLResponse:
    """The study's current run, or the run chosen with ``?run=<id>``; the job page while no
    run has results yet."""
    study = load_study(session, study_id)
    data = study_json(session, study)
    job = data["job"]
    shown = shown_run(study, run, services.registry.production_id())
    if shown is None and job:
        return RedirectResponse(f"/jobs/{job['id']}", status_code=303)
    if shown is not None:  # the page's figures and links are the shown run's
        data |= {k: shown[k] for k in ("summary", "metrics", "model_id", "spine_volume_ml", "downloads")}
    accounts.record(session, username=user.username, action="study.view", target=study_id)
    viewer = {"viewer_base": shown["base"]} if shown else {}  # the viewer reads the shown run's files
    priors = prior_comparisons(session, study, find_run(study, shown["id"])) if shown else None
    return render(request, "result.html", user, study=data, shown_run=shown, priors=priors,
                  original=original_offer(session, study, user.role), **viewer)


@router.post("/studies/{study_id}/delete", dependencies=[FreesDisk])
def delete_from_page(study_id: str, user: Uploader, session: DbSession, services: Services) -> Response:
    discard_study(session, services, study_id, user)
    return RedirectResponse("/studies", status_code=303)


@router.get("/evaluation")
def evaluation_page(request: Request, user: Researcher, session: DbSession, services: Services, ids: str = "",
                    id: Annotated[list[str] | None, Query()] = None, model: str = "",
                    exclude_training: str = "") -> HTMLResponse:
    """Studies with a scored run to choose from (only those with a run by ``model`` when one is
    chosen; scored against the newest correction where a study has one), and the table,
    agreement and plots of the chosen ones; the means leave out studies the run's version saw in
    training when ``exclude_training`` is set."""
    studies = list_studies(session, filters=StudyFilter(with_truth=True))
    scored = [(s, evaluated_scores(s, model or None)) for s in studies]
    candidates = [study_json(session, s, full=False) | {"run_model": found.run.model_version,
                                                        "run_dice": found.metrics.get("dice"), "truth": found.truth}
                  for s, found in scored if found is not None]
    chosen = [part for part in ids.split(",") if part] + list(id or [])
    context: dict[str, Any] = {"candidates": candidates, "chosen": set(chosen), "ids": ",".join(chosen),
                               "keys": TABLE_KEYS, "rows": None, "model": model,
                               "versions": evaluated_versions(studies),
                               "model_query": f"&model={quote(model)}" if model else "",
                               "exclude_training": bool(exclude_training)}
    if chosen:
        rows = case_rows(session, ",".join(chosen), model, services.registry)
        stats = volume_agreement(rows)
        counted = [r for r in rows if not (exclude_training and r.in_training)]
        context |= {"rows": rows, "summary": mean_and_sd(counted), "counted": len(counted),
                    "agreement": stats.summary() if stats else None,
                    "levels": levels_overview(rows), "level_names": vertebra_names(rows)}
    return render(request, "evaluation.html", user, **context)
