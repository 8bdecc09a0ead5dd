"""Evaluation across studies with a ground truth (researchers): JSON, CSV and the plots."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from spineseg.metrics.plots import plot_bland_altman
from spineseg.services.evaluation import CaseRow, mean_and_sd, table_csv, volume_agreement, write_box_plot
from spineseg.store import accounts
from spineseg.store.studies import get_study
from spineseg.web.deps import DbSession, Researcher

router = APIRouter(prefix="/api/evaluation", tags=["evaluation"])

Ids = Annotated[str, Query(description="comma-separated study ids (studies with a ground truth, done)")]


def case_rows(session: Session, ids: str) -> list[CaseRow]:
    """The evaluated studies named in ``ids``; 404 naming any that is unknown or has no metrics."""
    rows = []
    for study_id in [part for part in ids.split(",") if part.strip()]:
        study = get_study(session, study_id=study_id.strip())
        if study is None:
            raise HTTPException(404, f"no study with id {study_id!r}")
        if not study.metrics:
            raise HTTPException(404, f"study {study_id} has no metrics: it needs a ground truth and a finished job")
        rows.append(CaseRow(study.id, study.name, study.metrics))
    if not rows:
        raise HTTPException(400, "choose at least one study (ids=...)")
    return rows


def evaluation_json(rows: list[CaseRow]) -> dict[str, Any]:
    stats = volume_agreement(rows)
    return {
        "cases": [{"study_id": r.study_id, "name": r.name, "metrics": r.metrics} for r in rows],
        "mean": {k: v[0] for k, v in mean_and_sd(rows).items()},
        "sd": {k: v[1] for k, v in mean_and_sd(rows).items()},
        "bland_altman_volume_ml": stats.summary() if stats else None,
    }


@router.get("", summary="Per-case metrics, mean and SD, Bland-Altman of spine volume")
def evaluation(ids: Ids, _user: Researcher, session: DbSession) -> dict[str, Any]:
    data = evaluation_json(case_rows(session, ids))
    accounts.record(session, username=_user.username, action="evaluation", target=ids, detail="json")
    return data


@router.get(".csv", summary="The evaluation table as CSV (cases, then mean and SD lines)")
def evaluation_csv(ids: Ids, _user: Researcher, session: DbSession) -> Response:
    rows = case_rows(session, ids)
    accounts.record(session, username=_user.username, action="evaluation", target=ids, detail="csv")
    return Response(table_csv(rows), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="spineseg-evaluation.csv"'})


@router.get("/bland-altman.png", summary="Bland-Altman plot of predicted vs true spine volume (needs 2+ cases)")
def bland_altman_png(ids: Ids, _user: Researcher, session: DbSession) -> Response:
    stats = volume_agreement(case_rows(session, ids))
    if stats is None:
        raise HTTPException(404, "a Bland-Altman plot needs at least 2 cases")
    with tempfile.TemporaryDirectory(prefix="spineseg-ba-") as folder:
        path = plot_bland_altman(stats, Path(folder) / "ba.png", title="Spine volume: prediction vs truth", units="mL")
        return Response(path.read_bytes(), media_type="image/png")


@router.get("/box-plot.png", summary="Box plots of the overlap metrics across the chosen cases")
def box_plot_png(ids: Ids, _user: Researcher, session: DbSession) -> Response:
    rows = case_rows(session, ids)
    with tempfile.TemporaryDirectory(prefix="spineseg-box-") as folder:
        return Response(write_box_plot(rows, Path(folder) / "box.png").read_bytes(), media_type="image/png")
