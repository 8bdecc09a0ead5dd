"""Evaluation across studies with a ground truth (researchers): JSON, CSV and the plots."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from spineseg.metrics.evaluate import METRIC_KEYS
from spineseg.metrics.plots import plot_bland_altman
from spineseg.registry import Registry
from spineseg.services.evaluation import (
    CaseRow,
    agreement_labels,
    agreement_points,
    mean_and_sd,
    table_csv,
    volume_agreement,
    write_box_plot,
)
from spineseg.services.evaluation_levels import levels_csv, levels_overview
from spineseg.services.evaluation_truth import TrainingCases, evaluated_scores, training_cases
from spineseg.services.quality import verdict_of
from spineseg.store import accounts
from spineseg.store.studies import get_study
from spineseg.web.deps import DbSession, Researcher, Services

router = APIRouter(prefix="/api/evaluation", tags=["evaluation"])

Ids = Annotated[str, Query(description="comma-separated study ids (studies with a ground truth, done)")]
Model = Annotated[str, Query(description="model version: each study's newest done run by this version (default: "
                                         "each study's current run)")]


def case_rows(session: Session, ids: str, model: str = "", registry: Registry | None = None) -> list[CaseRow]:
    """The evaluated studies named in ``ids`` (their current runs, or their newest runs made by
    ``model``), scored against each study's truth now (its newest correction, else the upload),
    marked where the run's version saw the study in training (with ``registry``); 404 naming any
    that is unknown or has no such run with metrics."""
    rows = []
    seen: dict[str, TrainingCases] = {}
    for study_id in [part for part in ids.split(",") if part.strip()]:
        study = get_study(session, study_id=study_id.strip())
        if study is None:
            raise HTTPException(404, f"no study with id {study_id!r}")
        found = evaluated_scores(study, model or None)
        if found is None:
            which = f"no done run by model version {model!r} with" if model else "no"
            raise HTTPException(404, f"study {study_id} has {which} metrics: it needs a ground truth and a "
                                     "finished job")
        # Runs scored before a metric existed show it as not measured (None), never as an error.
        run = found.run
        metrics = {**dict.fromkeys(METRIC_KEYS), **found.metrics}
        if registry is not None and run.model_version and run.model_version not in seen:
            seen[run.model_version] = training_cases(session, registry, run.model_version)
        in_training = run.model_version in seen and seen[run.model_version].saw(study)
        rows.append(CaseRow(study.id, study.name, metrics, run.model_version, run.id, study.site,
                            found.level_scores, verdict_of(run.summary), truth=found.truth, effort=found.effort,
                            in_training=in_training))
    if not rows:
        raise HTTPException(400, "choose at least one study (ids=...)")
    return rows


def evaluation_json(rows: list[CaseRow], exclude_training: bool = False) -> dict[str, Any]:
    stats = volume_agreement(rows)
    counted = [r for r in rows if not (exclude_training and r.in_training)]
    return {
        "cases": [{"study_id": r.study_id, "name": r.name, "site": r.site, "model_version": r.model_version,
                   "run_id": r.run_id, "metrics": r.metrics, "levels": r.levels, "truth": r.truth,
                   "correction_effort": r.effort, "in_training": r.in_training} for r in rows],
        "mean": {k: v[0] for k, v in mean_and_sd(counted).items()},
        "sd": {k: v[1] for k, v in mean_and_sd(counted).items()},
        "means_exclude_training": exclude_training, "cases_in_means": len(counted),
        "bland_altman_volume_ml": stats.summary() if stats else None,
        "bland_altman_points": agreement_points(rows) if stats else [],
        "levels": levels_overview(rows),
    }


@router.get("", summary="Per-case metrics, mean and SD, Bland-Altman of spine volume")
def evaluation(ids: Ids, _user: Researcher, session: DbSession, services: Services, model: Model = "",
               exclude_training: Annotated[bool, Query(description="leave studies the run's model version saw in "
                                                                   "training out of the mean and SD")] = False,
               ) -> dict[str, Any]:
    data = evaluation_json(case_rows(session, ids, model, services.registry), exclude_training)
    accounts.record(session, username=_user.username, action="evaluation", target=ids, detail="json")
    return data


ExcludeTraining = Annotated[bool, Query(description="leave studies the run's model version saw in training out of "
                                                   "the mean and SD")]


@router.get(".csv", summary="The evaluation table as CSV (cases with their truth, correction effort and whether "
                            "the version saw them in training; then mean and SD lines)")
def evaluation_csv(ids: Ids, _user: Researcher, session: DbSession, services: Services, model: Model = "",
                   exclude_training: ExcludeTraining = False) -> Response:
    rows = case_rows(session, ids, model, services.registry)
    accounts.record(session, username=_user.username, action="evaluation", target=ids, detail="csv")
    return Response(table_csv(rows, exclude_training), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="spineseg-evaluation.csv"'})


@router.get("/levels.csv", summary="Per-vertebra level scores as CSV (cases whose truth names each vertebra)")
def evaluation_levels_csv(ids: Ids, _user: Researcher, session: DbSession, model: Model = "") -> Response:
    rows = case_rows(session, ids, model)
    if levels_overview(rows) is None:
        raise HTTPException(404, "none of the chosen studies has level scores: their truth does not name each "
                                 "vertebra (or they were segmented before levels were scored)")
    accounts.record(session, username=_user.username, action="evaluation", target=ids, detail="levels csv")
    return Response(levels_csv(rows), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="spineseg-evaluation-levels.csv"'})


@router.get("/bland-altman.png", summary="Bland-Altman plot of predicted vs true spine volume (needs 2+ cases)")
def bland_altman_png(ids: Ids, _user: Researcher, session: DbSession, model: Model = "") -> Response:
    rows = case_rows(session, ids, model)
    stats = volume_agreement(rows)
    if stats is None:
        raise HTTPException(404, "a Bland-Altman plot needs at least 2 cases")
    with tempfile.TemporaryDirectory(prefix="spineseg-ba-") as folder:
        path = plot_bland_altman(stats, Path(folder) / "ba.png", title="Spine volume: prediction vs truth", units="mL",
                                  labels=agreement_labels(rows))
        return Response(path.read_bytes(), media_type="image/png")


@router.get("/box-plot.png", summary="Box plots of the overlap metrics across the chosen cases")
def box_plot_png(ids: Ids, _user: Researcher, session: DbSession, model: Model = "") -> Response:
    rows = case_rows(session, ids, model)
    with tempfile.TemporaryDirectory(prefix="spineseg-box-") as folder:
        return Response(write_box_plot(rows, Path(folder) / "box.png").read_bytes(), media_type="image/png")
