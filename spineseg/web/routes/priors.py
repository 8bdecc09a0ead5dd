"""The change since each prior study of the same patient (``services.prior_studies``): JSON and
CSV of a study's current run, or of the run chosen with ``?run=<id>``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from spineseg.services.prior_studies import prior_changes_csv, prior_comparisons
from spineseg.services.runs import find_run
from spineseg.store import accounts
from spineseg.store.models import Job, Study
from spineseg.web.deps import CurrentUser, DbSession
from spineseg.web.routes.api import load_study

router = APIRouter(prefix="/api/studies/{study_id}", tags=["priors"])

RunQuery = Annotated[str, Query(description="a done run of the study (default: its current run)")]


def _run(study: Study, run_id: str) -> Job | None:
    """The run asked for; 404 saying why when it is not a done run of the study."""
    if not run_id:
        return None
    run = find_run(study, run_id)
    if run is None or run.status != "done":
        raise HTTPException(404, f"study {study.id} has no done run {run_id!r}")
    return run


@router.get("/priors", summary="The patient's studies (same pseudonym, oldest first) and, per vertebra, the change "
                               "since each prior: heights (mm, %), trabecular HU, Genant grade, interval, flags")
async def priors(study_id: str, user: CurrentUser, session: DbSession, run: RunQuery = "") -> dict[str, Any]:
    study = load_study(session, study_id)
    data = await run_in_threadpool(prior_comparisons, session, study, _run(study, run))
    accounts.record(session, username=user.username, action="study.view", target=study_id, detail="priors")
    return data


@router.get("/priors.csv", summary="The change since each prior study as CSV (one row per prior and level)",
            responses={200: {"description": "the CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def priors_csv(study_id: str, user: CurrentUser, session: DbSession, run: RunQuery = "") -> Response:
    study = load_study(session, study_id)
    data = await run_in_threadpool(prior_comparisons, session, study, _run(study, run))
    accounts.record(session, username=user.username, action="download", target=study_id, detail="priors.csv")
    name = f"spineseg-{study.id[:8]}-priors.csv"
    return Response(prior_changes_csv(data), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
