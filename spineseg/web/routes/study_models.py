"""Studies and model versions, multi-centre: re-run a study with a chosen version, tag a
study with its site, and the evaluation broken down by site."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from spineseg.errors import ModelNotFoundError
from spineseg.metrics.evaluate import METRIC_KEYS
from spineseg.store import accounts
from spineseg.store.datasets import check_name
from spineseg.store.studies import create_job, get_study
from spineseg.web.deps import CurrentUser, DbSession, Services, Uploader
from spineseg.web.ownership import require_owner_or_admin
from spineseg.web.routes.api import job_json
from spineseg.web.training_deps import Trainer

router = APIRouter(prefix="/api", tags=["studies and versions"])


class RerunRequest(BaseModel):
    version: str = Field(description="registry version id to segment with (the production one when omitted)",
                         default="")


class SiteTag(BaseModel):
    site: str = Field(description="centre the study comes from; empty removes the tag")


@router.post("/studies/{study_id}/rerun", status_code=202,
             summary="Segment a study again with another model version (a new job; the study records it)")
def rerun(study_id: str, body: RerunRequest, user: Uploader, session: DbSession, services: Services) -> dict[str, Any]:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    require_owner_or_admin(study, user, "re-run")
    if study.latest_job and study.latest_job.status in ("queued", "running"):
        raise HTTPException(409, f"study {study_id} is still being segmented; wait or cancel its job first")
    if body.version:
        try:
            services.registry.get(body.version)
        except ModelNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
    job = create_job(session, study_id=study_id)
    job.model_version = body.version or None
    accounts.record(session, username=user.username, action="rerun", target=study_id,
                    detail=f"version {body.version or 'production'}")
    session.commit()
    services.queue.enqueue_segment(job.id)
    return {"study_id": study_id, "job_id": job.id, "model_version": job.model_version} | {
        "job": job_json(session, job)}


@router.get("/studies/{study_id}/versions", summary="The study's model version and site, and the versions it can be "
                                                    "re-run with")
def study_versions(study_id: str, _user: CurrentUser, session: DbSession, services: Services) -> dict[str, Any]:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    return {"study_id": study_id, "model_id": study.model_id, "site": study.site,
            "production": services.registry.production_id(),
            "versions": [m.id for m in reversed(services.registry.list_versions())]}


@router.put("/studies/{study_id}/site", summary="Set (or clear) the site tag of a study")
def set_site(study_id: str, body: SiteTag, user: Uploader, session: DbSession) -> dict[str, Any]:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
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
