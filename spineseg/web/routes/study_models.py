"""Studies and model versions, multi-centre: a study's runs (re-run with a chosen version, list,
compare two, pin the current one), tag a study with its site, and the evaluation broken down
by site. The logic lives in ``services.runs``."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from spineseg.errors import ModelNotFoundError
from spineseg.metrics.evaluate import METRIC_KEYS
from spineseg.services.runs import (
    PRODUCTION,
    compare_runs,
    current_reason,
    find_run,
    new_run,
    pin_run,
    runs_json,
)
from spineseg.store import accounts
from spineseg.store.datasets import check_name
from spineseg.store.models import Job, Study
from spineseg.store.studies import get_study
from spineseg.web.deps import CurrentUser, DbSession, NeedsDiskRoom, Services, Uploader
from spineseg.web.ownership import require_owner_or_admin
from spineseg.web.routes.api import job_json
from spineseg.web.training_deps import Trainer

router = APIRouter(prefix="/api", tags=["studies and versions"])


class RerunRequest(BaseModel):
    version: str = Field(description="registry version id to segment with; 'production' or omitted: the "
                                     "production version now (the run records the concrete id)", default="")
    make_current: bool = Field(default=False, description="the run becomes the study's shown result when it is done; "
                                                          "only for the production version (422 otherwise). Without "
                                                          "it the study's result stays the run it is")


class CurrentRun(BaseModel):
    run_id: str | None = Field(description="the run to show as the study's result (a done run); null: the "
                                            "newest done run now (it does not follow later runs)", default=None)


class SiteTag(BaseModel):
    site: str = Field(description="centre the study comes from; empty removes the tag")


def _study(session: DbSession, study_id: str) -> Study:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    return study


@router.post("/studies/{study_id}/rerun", status_code=202, dependencies=[NeedsDiskRoom],
             summary="Segment a study again (a new run; every earlier run and its files are kept)")
def rerun(study_id: str, body: RerunRequest, user: Uploader, session: DbSession, services: Services) -> dict[str, Any]:
    study = _study(session, study_id)
    require_owner_or_admin(study, user, "re-run")
    if study.latest_job and study.latest_job.status in ("queued", "running"):
        raise HTTPException(409, f"study {study_id} is still being segmented; wait or cancel its job first")
    try:
        job = new_run(session, study_id=study_id, registry=services.registry, version=body.version or None,
                      device=services.settings.device, make_current=body.make_current, username=user.username)
    except ModelNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    accounts.record(session, username=user.username, action="rerun", target=study_id,
                    detail=f"run {job.id} version {job.model_version} (asked: {body.version or PRODUCTION})"
                           + (", becomes the result when done" if body.make_current else ""))
    session.commit()
    services.queue.enqueue_segment(job.id)
    return {"study_id": study_id, "job_id": job.id, "run_id": job.id, "model_version": job.model_version} | {
        "job": job_json(session, job)}


@router.get("/studies/{study_id}/runs", summary="Every run of a study, newest first (model version, settings, "
                                               "status, metrics, downloads)")
def runs(study_id: str, _user: CurrentUser, session: DbSession) -> list[dict[str, Any]]:
    return runs_json(_study(session, study_id))


@router.put("/studies/{study_id}/current-run", summary="Choose the run the study shows as its result (null: the "
                                                       "newest done run now)")
def set_current_run(study_id: str, body: CurrentRun, user: Uploader, session: DbSession) -> dict[str, Any]:
    study = _study(session, study_id)
    require_owner_or_admin(study, user, "choose the current run of")
    current = pin_run(study, body.run_id, user.username)
    accounts.record(session, username=user.username, action="study.pin_run", target=study_id,
                    detail=f"run {current.id if current else None}" + ("" if body.run_id else " (the newest done run)"))
    session.commit()  # before the answer: the next request must see it
    return {"study_id": study_id, "current_run": current.id if current else None, "pinned": study.pinned_job_id,
            "current_run_reason": current_reason(study)}


def _run(study: Study, run_id: str) -> Job:
    run = find_run(study, run_id)
    if run is None:
        raise HTTPException(404, f"study {study.id} has no run {run_id!r}")
    return run


@router.get("/studies/{study_id}/runs/compare", summary="Two runs of a study side by side: Dice between their "
                                                        "masks and the spine volume difference (second - first)")
async def compare(
    study_id: str, _user: CurrentUser, session: DbSession, services: Services,
    first: Annotated[str, Query(description="id of a done run")],
    second: Annotated[str, Query(description="id of another done run of the same study")],
) -> dict[str, Any]:
    study = await run_in_threadpool(_study, session, study_id)
    runs_pair = (_run(study, first), _run(study, second))
    accounts.record(session, username=_user.username, action="study.compare_runs", target=study_id,
                    detail=f"{first} {second}")
    return await run_in_threadpool(compare_runs, services.settings.studies_dir, *runs_pair)


@router.get("/studies/{study_id}/versions", summary="The study's model version and site, and the versions it can be "
                                                    "re-run with")
def study_versions(study_id: str, _user: CurrentUser, session: DbSession, services: Services) -> dict[str, Any]:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    return {"study_id": study_id, "model_id": study.model_id, "site": study.site,
            "production": services.registry.production_id(), "current_run": study.pinned_job_id,
            "versions": [m.id for m in reversed(services.registry.list_versions())]}


@router.put("/studies/{study_id}/site", summary="Set (or clear) the site tag of a study (its owner or an admin)")
def set_site(study_id: str, body: SiteTag, user: Uploader, session: DbSession) -> dict[str, Any]:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    require_owner_or_admin(study, user, "change the site of")
    study.site = check_name(body.site, "site") if body.site.strip() else ""
    accounts.record(session, username=user.username, action="study.site", target=study_id, detail=study.site)
    session.commit()  # before the answer: the next request must see it
    return {"study_id": study_id, "site": study.site}


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else None,
            "sd": statistics.stdev(finite) if len(finite) > 1 else None, "n": len(finite)}


@router.get("/evaluation/by-site", summary="Evaluation metrics (mean, SD, n) per site of the chosen studies")
def evaluation_by_site(
    _user: Trainer, session: DbSession,
    ids: Annotated[str, Query(description="comma-separated ids of finished studies with a ground truth")],
) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for study_id in [part.strip() for part in ids.split(",") if part.strip()]:
        study = get_study(session, study_id=study_id)
        if study is None:
            raise HTTPException(404, f"no study with id {study_id!r}")
        if not study.metrics:
            raise HTTPException(404, f"study {study_id} has no metrics: it needs a ground truth and a finished job")
        groups[study.site or "(none)"].append(study.metrics)
    if not groups:
        raise HTTPException(400, "choose at least one study (ids=...)")
    return {"sites": {site: {"studies": len(rows),
                             "metrics": {k: _mean_sd([r.get(k) for r in rows]) for k in METRIC_KEYS}}
                      for site, rows in sorted(groups.items())}}
