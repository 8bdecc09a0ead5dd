"""Server-rendered pages for researchers: datasets, training (with live curves), models
(table, lineage tree, promote/rollback, export/import, compare). Forms post here with the
CSRF token; uploads go to the JSON API from a small script. Every action calls the same
store and service functions as the API."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from spineseg.errors import InputError
from spineseg.registry.metadata import all_metadata
from spineseg.services.datasets import dataset_json
from spineseg.services.model_governance import rollback_audited
from spineseg.services.promotions import needs_second_person, pending_proposals, proposal_json
from spineseg.services.split_preview import describe_split, split_preview
from spineseg.services.training import SCRATCH
from spineseg.store import accounts
from spineseg.store.datasets import create_dataset, list_datasets
from spineseg.store.studies import StudyFilter, list_studies
from spineseg.store.training_runs import list_runs, request_cancel
from spineseg.web import flash
from spineseg.web.deps import DbSession, NeedsDiskRoom, Services, run_in_session
from spineseg.web.routes.datasets import SplitUpdate, edit_split, load_dataset_row
from spineseg.web.routes.models import (
    CompareRequest,
    PromoteRequest,
    VersionLabel,
    all_versions,
    compare,
    history_json,
    label,
    lineage,
    promote,
    promotion_review,
)
from spineseg.web.routes.pages import render
from spineseg.web.routes.training import TrainingSettings, TrainingStart, load_run, run_json, start_run
from spineseg.web.training_deps import Trainer

router = APIRouter(include_in_schema=False)

SETTING_FIELDS = tuple(name for name in TrainingSettings.model_fields if name != "warmup_steps")


@router.get("/datasets")
def datasets_page(request: Request, user: Trainer, session: DbSession) -> HTMLResponse:
    rows = [dataset_json(d, with_cases=False) for d in list_datasets(session)]
    return render(request, "datasets_list.html", user, datasets=rows, error=None)


@router.post("/datasets")
def create_from_page(request: Request, user: Trainer, session: DbSession, name: Annotated[str, Form()],
                     description: Annotated[str, Form()] = "") -> Response:
    try:
        dataset = create_dataset(session, name=name, description=description, created_by=user.username)
    except InputError as exc:
        rows = [dataset_json(d, with_cases=False) for d in list_datasets(session)]
        return render(request, "datasets_list.html", user, 422, datasets=rows, error=exc.reason)
    accounts.record(session, username=user.username, action="dataset.create", target=dataset.id, detail=dataset.name)
    session.commit()  # before the answer: the next request must see it
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset_id: str, user: Trainer, session: DbSession) -> HTMLResponse:
    dataset = dataset_json(load_dataset_row(session, dataset_id))
    studies = [s for s in list_studies(session, filters=StudyFilter(with_truth=True)) if s.latest_job
               and s.latest_job.status == "done"]
    accounts.record(session, username=user.username, action="dataset.view", target=dataset_id)
    return render(request, "datasets_detail.html", user, dataset=dataset, studies=studies)


@router.post("/datasets/{dataset_id}/split")
async def split_from_page(request: Request, dataset_id: str, user: Trainer, session: DbSession) -> Response:
    form = await request.form()
    assignments = {str(k).removeprefix("split-"): str(v) for k, v in form.items() if str(k).startswith("split-")}
    await run_in_threadpool(edit_split, dataset_id, SplitUpdate(patients=assignments), user, session)
    return RedirectResponse(f"/datasets/{dataset_id}", status_code=303)


def _run_rows(session: Any) -> list[dict[str, Any]]:
    return [run_json(session, r) for r in list_runs(session, limit=50)]


def _training_datasets(session: Any) -> list[dict[str, Any]]:
    """The datasets for the training form, each with how its split will come out for a run."""
    rows = []
    for dataset in list_datasets(session):
        preview = split_preview(dataset)
        rows.append(dataset_json(dataset, with_cases=False) | {"split_preview": preview,
                                                               "split_text": describe_split(preview)})
    return rows


TRAINING_FORM_FIELDS = ("dataset_id", "base", "notes", *SETTING_FIELDS)


@router.get("/training")
def training_page(request: Request, user: Trainer, session: DbSession, services: Services,
                  dataset: str = "") -> HTMLResponse:
    kept = flash.take(request, "training")
    values = TrainingSettings().model_dump() | {"base": services.registry.production_id() or "",
                                                "dataset_id": dataset, "notes": ""} | kept["values"]
    labels = all_metadata(services.registry)
    versions = [{"id": m.id, "name": labels[m.id].display_name if m.id in labels else ""}
                for m in services.registry.list_versions()]
    return render(request, "training_start.html", user, datasets=_training_datasets(session), versions=versions,
                  runs=_run_rows(session), production=services.registry.production_id(), values=values,
                  fields=SETTING_FIELDS, chosen_dataset=values["dataset_id"], errors=kept["errors"],
                  scratch=SCRATCH)


@router.post("/training", dependencies=[NeedsDiskRoom])
async def start_from_page(request: Request, user: Trainer, session: DbSession, services: Services) -> Response:
    form = await request.form()
    try:
        settings = TrainingSettings(**{k: form[k] for k in SETTING_FIELDS if form.get(k)})
        body = TrainingStart(dataset_id=str(form.get("dataset_id", "")), base=str(form.get("base", "")),
                             settings=settings, notes=str(form.get("notes", "")))
        run = await run_in_threadpool(start_run, session, services, body, user.username)
    except (InputError, ValidationError) as exc:
        return flash.redirect_with(request, "/training", "training",
                                   values=flash.form_values(form, TRAINING_FORM_FIELDS),
                                   errors=flash.field_errors(exc, TRAINING_FORM_FIELDS))
    return RedirectResponse(f"/training/{run.id}", status_code=303)


@router.get("/training/{run_id}")
def run_page(request: Request, run_id: str, user: Trainer, session: DbSession) -> HTMLResponse:
    return render(request, "training_run.html", user, run=run_json(session, load_run(session, run_id)))


@router.post("/training/{run_id}/cancel")
def cancel_from_page(run_id: str, user: Trainer, session: DbSession) -> Response:
    if request_cancel(session, run_id=run_id) is None:
        raise HTTPException(404, f"no training run with id {run_id!r}")
    accounts.record(session, username=user.username, action="training.cancel", target=run_id)
    session.commit()  # before the answer: the next request must see it
    return RedirectResponse(f"/training/{run_id}", status_code=303)


def _models_context(session: Any, services: Any) -> dict[str, Any]:
    versions = all_versions(services.registry, session)
    return {"versions": list(reversed(versions)), "tree_nodes": lineage(versions),
            "history": history_json(services.registry), "production": services.registry.production_id(),
            "rollback_to": services.registry.rollback_target(),
            "proposals": [proposal_json(p) for p in pending_proposals(session)],
            "datasets": [dataset_json(d, with_cases=False) for d in list_datasets(session)]}


@router.get("/models")
def models_page(request: Request, user: Trainer, session: DbSession, services: Services) -> HTMLResponse:
    kept = flash.take(request, "models")
    return render(request, "models.html", user, error=kept["message"], notice=kept["notice"],
                  errors=kept["errors"], values=kept["values"], **_models_context(session, services))


@router.get("/models/{version_id}/promote")
async def promote_confirm_page(request: Request, version_id: str, user: Trainer, services: Services) -> HTMLResponse:
    """The confirmation step: both versions' figures on the same validation cases, the warnings,
    and the boxes to tick when the candidate is lower or was never validated."""
    kept = flash.take(request, "promote")

    def review(session: Any) -> Any:
        return promotion_review(services, session, version_id)

    found = await run_in_session(services, review)
    labels = all_metadata(services.registry)
    return render(request, "models_promote.html", user, review=found, labels=labels,
                  production=services.registry.production_id(), version_id=version_id,
                  two_person=needs_second_person(services.settings.promotion_approval),
                  errors=kept["errors"], values=kept["values"])


@router.post("/models/{version_id}/promote")
async def promote_from_page(request: Request, version_id: str, user: Trainer, services: Services) -> Response:
    form = await request.form()
    body = PromoteRequest(confirm=bool(form.get("confirm")), force=bool(form.get("force")))

    def act(session: Any) -> dict[str, Any]:
        return promote(version_id, user, session, services, body)

    try:
        result = await run_in_session(services, act)
    except HTTPException as exc:
        if exc.status_code != 409:
            raise
        field = "force" if "force" in str(exc.detail) else "confirm"
        return flash.redirect_with(request, f"/models/{version_id}/promote", "promote",
                                   values=flash.form_values(form, ("confirm", "force")), errors={field: exc.detail})
    if "proposal" in result:
        return flash.redirect_with(request, "/models", "models",
                                   notice=f"proposed {version_id} for production: an administrator other than you "
                                          "approves it below; production is unchanged until then")
    return flash.redirect_with(request, "/models", "models", notice=f"{version_id} is now the production version")


@router.post("/models/{version_id}/label")
async def label_from_page(request: Request, version_id: str, user: Trainer, services: Services) -> Response:
    form = await request.form()
    values = flash.form_values(form, ("display_name", "notes"))
    try:
        body = VersionLabel(display_name=str(values.get("display_name", "")), notes=str(values.get("notes", "")))
        await run_in_session(services, lambda session: label(version_id, body, user, session, services))
    except (InputError, ValidationError) as exc:
        return flash.redirect_with(request, f"/models#label-{version_id}", "models",
                                   values=values | {"version": version_id},
                                   errors=flash.field_errors(exc, ("display_name", "notes")))
    return flash.redirect_with(request, "/models", "models", notice=f"saved the name and notes of {version_id}")


@router.post("/models/rollback")
def rollback_from_page(request: Request, user: Trainer, session: DbSession, services: Services) -> Response:
    try:
        model = rollback_audited(services.registry, session, actor=user.username)
    except InputError as exc:
        return flash.redirect_with(request, "/models", "models", message=exc.reason)
    services.production_changed()
    session.commit()  # before the answer: the next request must see it
    return flash.redirect_with(request, "/models", "models", notice=f"rolled back: {model.id} is production again")


@router.post("/models/compare")
async def compare_from_page(request: Request, user: Trainer, services: Services) -> Response:
    form = await request.form()
    values = flash.form_values(form, ("versions", "dataset_id", "split"))
    body = CompareRequest(versions=[str(v) for v in form.getlist("versions")],
                          dataset_id=str(form.get("dataset_id", "")), split=str(form.get("split") or "test"))
    try:
        result = await compare(body, user, services)
    except (InputError, HTTPException) as exc:
        text = exc.reason if isinstance(exc, InputError) else str(exc.detail)
        return flash.redirect_with(request, "/models#compare-form", "models", message=text,
                                   values=values | {"versions": [str(v) for v in form.getlist("versions")]},
                                   errors={"compare": text})
    return RedirectResponse(f"/models/comparisons/{result['id']}", status_code=303)


@router.get("/models/comparisons/{comparison_id}")
def comparison_page(request: Request, comparison_id: str, user: Trainer, services: Services) -> HTMLResponse:
    folder = services.settings.data_dir / "comparisons" / comparison_id
    if not re.fullmatch(r"[0-9a-f]{32}", comparison_id) or not (folder / "result.json").is_file():
        raise HTTPException(404, f"no comparison with id {comparison_id!r}")
    return render(request, "models_compare.html", user, result=json.loads((folder / "result.json").read_text()))
