"""What an evaluation row is measured against and on (issue 32 items 3 and 4).

- ``evaluated_scores``: a study's run and its scores against the study's truth now: the newest
  correction when there is one (the scores stored when it was saved, or the run's own when it
  was made after it), else the uploaded truth (the run's own metrics); with the correction's
  effort (voxels changed, levels renamed).
- ``TrainingCases``: the studies and patients a model version saw in training, from the
  service's datasets it was trained on (the card's dataset id, the dataset it locked, its
  training runs): a study is marked when a training-split case came from it or from its
  patient's pseudonym. Versions trained outside the service (the shipped default) list external
  case names that no uploaded study can be matched to; ``external`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spineseg.errors import IntegrityError, ModelNotFoundError
from spineseg.registry import Registry
from spineseg.services.corrections import scores_against_latest
from spineseg.services.datasets import effective_split
from spineseg.services.runs import current_run, runs_of
from spineseg.store.corrections import latest_correction
from spineseg.store.models import Job, Study
from spineseg.store.training_models import Dataset, TrainingRun


@dataclass(frozen=True)
class EvaluatedRun:
    run: Job
    metrics: dict[str, Any]
    level_scores: dict[str, Any] | None
    truth: str  # "upload" or "correction v<N>"
    effort: dict[str, Any] | None = None  # the newest correction's, when the truth is one


def _run_for(study: Study, model_version: str | None) -> Job | None:
    if model_version is None:
        return current_run(study)
    return next((job for job in reversed(runs_of(study))
                 if job.status == "done" and job.model_version == model_version), None)


def evaluated_scores(study: Study, model_version: str | None = None) -> EvaluatedRun | None:
    """The evaluated run of ``study`` (its current run, or its newest done run by
    ``model_version``) scored against the study's truth now; ``None`` when it has no scores."""
    run = _run_for(study, model_version)
    if run is None:
        return None
    latest = latest_correction(study)
    if latest is not None:
        scores = scores_against_latest(study, run)
        if scores is None:
            return None
        effort = dict(latest.effort) | {"edit_seconds": latest.edit_seconds, "by": latest.created_by}
        return EvaluatedRun(run, scores["metrics"], scores.get("level_scores"), f"correction v{latest.version}", effort)
    if not run.metrics:
        return None
    return EvaluatedRun(run, run.metrics, (run.summary or {}).get("level_scores"), "upload")


def has_scores(study: Study, model_version: str | None = None) -> bool:
    return evaluated_scores(study, model_version) is not None


@dataclass
class TrainingCases:
    """Studies and patient pseudonyms a version was trained on (training split only)."""

    study_ids: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    external: list[str] = field(default_factory=list)  # case names of a dataset outside the service

    def saw(self, study: Study) -> bool:
        return study.id in self.study_ids or (study.patient_pseudonym is not None
                                              and study.patient_pseudonym in self.patients)


def training_cases(session: Session, registry: Registry, version_id: str) -> TrainingCases:
    """What ``version_id`` saw in training (see the module's docstring); empty when unknown."""
    seen = TrainingCases()
    ids: set[str] = set(session.scalars(select(Dataset.id).where(Dataset.locked_by == version_id)))
    ids |= {d for d in session.scalars(select(TrainingRun.dataset_id).where(TrainingRun.version_id == version_id))}
    try:
        card_dataset = registry.unverified(version_id).card.dataset or {}
    except (ModelNotFoundError, IntegrityError):  # gone from the registry: only the database speaks
        card_dataset = {}
    if card_dataset.get("id"):
        ids.add(str(card_dataset["id"]))
    for dataset_id in ids:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            continue
        split = effective_split(dataset)
        for case in dataset.cases:
            if split.get(case.patient) != "train":
                continue
            seen.patients.add(case.patient)
            if case.source_study_id:
                seen.study_ids.add(case.source_study_id)
    if not ids:
        seen.external = [str(entry.get("name")) for entry in card_dataset.get("manifest", [])
                         if entry.get("split", "train") == "train"]
    return seen
