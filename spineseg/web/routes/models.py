"""Model versions API under ``/api/models`` (researchers): the versions with their lineage,
promote and roll back (recorded with who and when), export and import archives, and compare
versions on a dataset's test cases."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from spineseg.errors import InputError, IntegrityError, ModelNotFoundError, public_text, strip_server_paths
from spineseg.registry import RegisteredModel, Registry
from spineseg.registry.metadata import MAX_NAME, MAX_NOTES, VersionMetadata, all_metadata, read_metadata, write_metadata
from spineseg.services.datasets import case_specs
from spineseg.services.model_comparison import compare_versions, write_comparison_plots
from spineseg.services.model_governance import (
    PromotionRefused,
    PromotionReview,
    card_figures,
    expected_accuracy,
    promote_checked,
    review_for,
    rollback_audited,
)
from spineseg.services.promotions import needs_second_person, proposal_json, propose
from spineseg.store import accounts
from spineseg.store.datasets import get_dataset
from spineseg.store.studies import new_id
from spineseg.store.training_runs import runs_by_version
from spineseg.web.body_limit import STREAMED_BODY
from spineseg.web.deps import DbSession, NeedsDiskRoom, Services, run_in_session
from spineseg.web.training_deps import Trainer
from spineseg.web.uploads import receive_upload

router = APIRouter(prefix="/api/models", tags=["models"])

IMPORT_SCHEMA = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "string", "format": "binary",
                                 "description": "one archive written by export (card.json + weights.safetensors)"}},
    }}}}
}


class CompareRequest(BaseModel):
    versions: list[str] = Field(description="2-6 version ids; the first is the reference")
    dataset_id: str
    split: str = Field("test", description="which split's cases to score: test (default), val or train")


@contextmanager
def known_versions() -> Iterator[None]:
    """An unknown version id is a 404 here (the service still segments), not the 503 that a
    missing production model means; a version whose weights are damaged is a 409 saying so
    (restore it or use another), never a 500."""
    try:
        yield
    except ModelNotFoundError as exc:
        raise HTTPException(404, strip_server_paths(str(exc))) from exc
    except IntegrityError as exc:
        raise HTTPException(409, f"{strip_server_paths(str(exc))}; restore the version's files from a backup or "
                                 "import it again (its card and figures stay readable)") from exc


class PromoteRequest(BaseModel):
    confirm: bool = Field(False, description="promote although the candidate's validation Dice is lower than "
                                             "production's on the same cases (or cannot be compared)")
    force: bool = Field(False, description="administrators only: promote a version that has no validation figures")


class VersionLabel(BaseModel):
    display_name: str = Field("", description=f"a short name shown beside the id (at most {MAX_NAME} characters)")
    notes: str = Field("", description=f"free text shown with the version (at most {MAX_NOTES} characters)")


def version_json(model: RegisteredModel, runs: dict[str, Any],
                 metadata: VersionMetadata | None = None) -> dict[str, Any]:
    card = model.card
    metadata = metadata or VersionMetadata()
    validation = card_figures(model.id, card)
    run = runs.get(model.id)
    recorded = card.dataset.get("name") or (Path(card.dataset["path"]).name if card.dataset.get("path") else None)
    dataset = ({"id": run.dataset_id, "name": run.dataset.name if run.dataset else recorded} if run else
               {"id": None, "name": recorded})
    metrics = {k: v for k, v in card.metrics.items() if k != "history"}
    return {
        "id": model.id, "parent_id": card.parent_id, "is_production": model.is_production,
        "created": card.created, "created_by": run.created_by if run else card.dataset.get("trained_by"),
        "dataset": dataset, "training_run": run.id if run else None, "metrics": metrics,
        "hyperparameters": card.hyperparameters, "architecture": card.architecture.get("name"),
        "notes": card.notes, "code_version": card.code_version, "weights_sha256": card.weights_sha256,
        "display_name": metadata.display_name, "version_notes": metadata.notes,
        "validation": {"dice": validation.dice, "cases": validation.cases},
        "expected": expected_accuracy(card), "predecessor_id": card.predecessor_id,
    }


def lineage(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roots (versions whose parent is unknown here) with nested ``children``, oldest first."""
    nodes = {v["id"]: {"id": v["id"], "is_production": v["is_production"], "children": []} for v in versions}
    roots = []
    for v in versions:
        parent = nodes.get(v["parent_id"] or "")
        (parent["children"] if parent else roots).append(nodes[v["id"]])
    return roots


def all_versions(registry: Registry, session: Session) -> list[dict[str, Any]]:
    runs, labels = runs_by_version(session), all_metadata(registry)
    return [version_json(m, runs, labels.get(m.id)) for m in registry.list_versions()]


def history_json(registry: Registry) -> list[dict[str, Any]]:
    return [{"action": e.action, "version_id": e.version_id, "previous_id": e.previous_id, "actor": e.actor,
             "at": e.at} for e in registry.history()]


@router.get("", summary="All versions (oldest first) with lineage, metrics, dataset, creator, production flag")
def versions(_user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    listed = all_versions(services.registry, session)
    return {"production": services.registry.production_id(), "versions": listed, "lineage": lineage(listed),
            "history": history_json(services.registry)}


@router.get("/history", summary="Promotions and rollbacks with who and when")
def history(_user: Trainer, services: Services) -> list[dict[str, Any]]:
    return history_json(services.registry)


@router.post("/rollback", summary="Return production to the previous production version (audited with the "
                                  "figures of both)")
def rollback(user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    model = rollback_audited(services.registry, session, actor=user.username)
    services.production_changed()
    session.commit()  # before the answer: the next request must see it
    return {"production": model.id, "history": history_json(services.registry)}


def _public(text: str, path: Path, name: str) -> str:
    """Error text about an uploaded archive with its temporary path replaced by the client's
    name and no other server folder left in it."""
    return public_text(text, ((path, name),))


@router.post("/import", status_code=201, openapi_extra=IMPORT_SCHEMA, max_body_size=STREAMED_BODY,
             dependencies=[NeedsDiskRoom],
             summary="Import a version exported at another site (card and weights hash kept)")
async def import_version(request: Request, user: Trainer, services: Services) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="spineseg-import-") as folder:
        received = await receive_upload(request, Path(folder) / "in", Path(folder) / "unused",
                                        services.settings.max_upload_bytes)
        if len(received.files) != 1:
            raise InputError("files", "upload exactly one exported version archive (.zip)")
        path, name = next(iter(received.files.items()))
        try:
            model = await run_in_threadpool(services.registry.import_file, path)
        except InputError as exc:
            exc.source = name
            exc.reason = _public(exc.reason, path, name)
            exc.field = "files"
            raise
        except IntegrityError as exc:  # the uploaded archive's weights do not match its card: bad input
            error = InputError(name, _public(str(exc), path, name))
            error.field = "files"
            raise error from exc
    def record(session: Session) -> dict[str, Any]:
        accounts.record(session, username=user.username, action="model.import", target=model.id, detail=name)
        return version_json(model, runs_by_version(session))

    return await run_in_session(services, record)


@router.post("/compare", summary="Compare 2-6 versions on a dataset's test cases: Dice, Bland-Altman, time")
async def compare(body: CompareRequest, user: Trainer, services: Services) -> dict[str, Any]:
    def cases_of(session: Session) -> tuple[list[Any], str]:
        dataset = get_dataset(session, dataset_id=body.dataset_id)
        if dataset is None:
            raise InputError("dataset_id", f"no dataset with id {body.dataset_id!r}")
        return [s for s in case_specs(dataset) if s.split == body.split], dataset.name

    specs, name = await run_in_session(services, cases_of)
    if not specs:
        raise InputError("dataset_id", f"dataset {name!r} has no cases in the {body.split!r} split")
    with known_versions():
        result = await run_in_threadpool(compare_versions, services.registry, body.versions, specs,
                                         device=services.settings.device)
    comparison_id = new_id()
    folder = comparisons_dir(services) / comparison_id
    plots = await run_in_threadpool(write_comparison_plots, result, folder)
    result |= {"id": comparison_id, "dataset": {"id": body.dataset_id, "name": name}, "split": body.split,
               "plots": {v: f"/api/models/comparisons/{comparison_id}/bland-altman/{v}.png" for v in plots}}
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    await run_in_session(services, lambda session: accounts.record(
        session, username=user.username, action="model.compare", target=",".join(body.versions),
        detail=f"dataset {name}, {len(specs)} case(s)"))
    return result


def comparisons_dir(services: Any) -> Path:
    return services.settings.data_dir / "comparisons"


def _comparison_folder(services: Any, comparison_id: str) -> Path:
    folder = comparisons_dir(services) / comparison_id
    if not re.fullmatch(r"[0-9a-f]{32}", comparison_id) or not (folder / "result.json").is_file():
        raise HTTPException(404, f"no comparison with id {comparison_id!r}")
    return folder


@router.get("/comparisons/{comparison_id}", summary="A stored comparison result")
def comparison(comparison_id: str, _user: Trainer, services: Services) -> dict[str, Any]:
    return json.loads((_comparison_folder(services, comparison_id) / "result.json").read_text())


@router.get("/comparisons/{comparison_id}/bland-altman/{version_id}.png",
            summary="Bland-Altman plot of per-case Dice: this version vs the reference")
def comparison_plot(comparison_id: str, version_id: str, _user: Trainer, services: Services) -> Response:
    path = _comparison_folder(services, comparison_id) / f"bland-altman-{version_id}.png"
    if "/" in version_id or not path.is_file():
        raise HTTPException(404, f"no plot for version {version_id!r} in this comparison (needs 2+ cases)")
    return Response(path.read_bytes(), media_type="image/png")


@router.get("/{version_id}", summary="One version: its card (parent, dataset, settings, metrics)")
def version(version_id: str, _user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    """`weights` says whether the weights match the sha256 the card records, and what is wrong
    when they do not (the version is still shown: its card and figures are intact)."""
    with known_versions():
        model = services.registry.unverified(version_id)
    try:
        services.registry.get(version_id)
        weights = {"verified": True, "problem": None}
    except (IntegrityError, OSError) as exc:
        weights = {"verified": False, "problem": strip_server_paths(str(exc))}
    data = version_json(model, runs_by_version(session), read_metadata(services.registry, version_id))
    data["card"] = json.loads(model.card.to_json())
    data["weights"] = weights
    return data


@router.patch("/{version_id}", summary="Set a version's display name and notes (the card stays as trained)")
def label(version_id: str, body: VersionLabel, user: Trainer, session: DbSession,
          services: Services) -> dict[str, Any]:
    with known_versions():
        metadata = write_metadata(services.registry, version_id, display_name=body.display_name,
                                  notes=body.notes, actor=user.username)
    accounts.record(session, username=user.username, action="model.label", target=version_id,
                    detail=metadata.display_name)
    session.commit()
    return version_json(services.registry.unverified(version_id), runs_by_version(session), metadata)


def promotion_review(services: Any, session: Session, version_id: str) -> PromotionReview:
    """The figures a promotion of ``version_id`` is decided on (computed figures are kept)."""
    with known_versions():
        return review_for(services.registry, session, version_id, device=services.settings.device,
                          cache_dir=services.settings.data_dir / "promotion-reviews")


@router.get("/{version_id}/promotion", summary="What promoting this version would change: its validation Dice "
                                               "and production's on the same cases, and the warnings")
def promotion(version_id: str, _user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    return promotion_review(services, session, version_id).to_json()


@router.post("/{version_id}/promote", summary="Make this version production (audited with the figures); with "
                                              "SPINESEG_PROMOTION_APPROVAL=two-person (the default) propose it: "
                                              "202, an admin other than you approves it (/api/promotions)",
             responses={202: {"description": "proposed: production is unchanged until an admin approves"},
                        409: {"description": "lower than production or not comparable (send confirm), or "
                                             "without validation figures (an administrator sends force)"}})
def promote(version_id: str, user: Trainer, session: DbSession, services: Services,
            body: PromoteRequest | None = None, response: Response = None) -> dict[str, Any]:  # type: ignore[assignment]
    body = body or PromoteRequest()
    cache_dir = services.settings.data_dir / "promotion-reviews"
    try:
        with known_versions():
            if needs_second_person(services.settings.promotion_approval):
                proposal, review = propose(services.registry, session, version_id, actor=user.username,
                                           confirm=body.confirm, force=body.force, cache_dir=cache_dir,
                                           device=services.settings.device)
                session.commit()  # before the answer: the next request must see it
                if response is not None:
                    response.status_code = 202
                return {"production": services.registry.production_id(), "proposal": proposal_json(proposal),
                        "review": review.to_json(), "history": history_json(services.registry)}
            model, review = promote_checked(
                services.registry, session, version_id, actor=user.username, is_admin=user.role == "admin",
                confirm=body.confirm, force=body.force, device=services.settings.device, cache_dir=cache_dir)
    except PromotionRefused as exc:
        raise HTTPException(409, exc.message) from exc
    services.production_changed()
    session.commit()  # before the answer: the next request must see it
    return {"production": model.id, "review": review.to_json(), "history": history_json(services.registry)}


@router.get("/{version_id}/export", summary="Download the version as the registry's export archive (.zip)",
            responses={409: {"description": "the version's weights do not match their recorded sha256 (said in "
                                            "`detail`): nothing is exported"}})
def export(version_id: str, user: Trainer, session: DbSession, services: Services) -> FileResponse:
    folder = Path(tempfile.mkdtemp(prefix="spineseg-export-"))
    try:
        with known_versions():
            path = services.registry.export(version_id, folder / f"spineseg-model-{version_id}.zip")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    accounts.record(session, username=user.username, action="model.export", target=version_id)
    session.commit()  # before the answer: the next request must see it
    return FileResponse(path, media_type="application/zip", filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
