"""Datasets API under ``/api/datasets`` (researchers): create, list, read, add labelled cases
by upload or from a study with a ground truth, remove cases, edit the patient split.

A case is validated before anything is recorded (CT readable, label map on the CT's grid and
with spine labels); a refused upload leaves no file and no row behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from spineseg.errors import InputError, public_text
from spineseg.services.datasets import check_convention, dataset_json, validate_case
from spineseg.services.deidentification import deidentify_input, deidentify_truth
from spineseg.services.ingest import arrange_input, extract_limit_bytes, unpack_truth
from spineseg.store import accounts
from spineseg.store.datasets import (
    add_case,
    case_folder,
    check_name,
    create_dataset,
    delete_case,
    get_case,
    get_dataset,
    list_datasets,
    set_split,
)
from spineseg.store.studies import get_study, new_id
from spineseg.store.training_models import Dataset
from spineseg.web.body_limit import STREAMED_BODY
from spineseg.web.deps import DbSession, FreesDisk, NeedsDiskRoom, Services, run_in_session
from spineseg.web.training_deps import Trainer
from spineseg.web.uploads import receive_upload

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

CASE_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["files", "truth", "patient"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "the CT: DICOM files of one series, or one .zip / NIfTI / image file"},
                "truth": {"type": "string", "format": "binary",
                          "description": "the label map: a NIfTI (binary, TotalSegmentator, VerSe ids) or a .zip "
                                         "of per-structure files (vertebrae_L1.nii.gz, sacrum.nii.gz ...)"},
                "patient": {"type": "string", "description": "patient id (the split is made per patient)"},
                "site": {"type": "string", "description": "centre the scan comes from (multi-centre view)"},
                "name": {"type": "string", "description": "case name, unique in the dataset (default: file name)"},
                "convention": {"type": "string", "description": "auto (default), binary, totalsegmentator, verse, "
                                                                "per-structure"},
                "partial": {"type": "string", "description": "'true' when only some vertebrae are labelled"},
            },
        }}},
    }
}


class DatasetCreate(BaseModel):
    name: str = Field(description="unique name: letters, digits, spaces, '.', '_', '-'")
    description: str = ""
    seed: int = Field(0, description="seed of the patient split for patients without an explicit split")


class CaseFromStudy(BaseModel):
    study_id: str
    patient: str
    site: str | None = Field(None, description="default: the study's site tag")
    name: str | None = Field(None, description="default: the study's name")
    convention: str = "auto"
    partial: bool = False


class SplitUpdate(BaseModel):
    patients: dict[str, str] = Field(description="patient -> train | val | test | auto")


def load_dataset_row(session: Any, dataset_id: str) -> Dataset:
    dataset = get_dataset(session, dataset_id=dataset_id)
    if dataset is None:
        raise HTTPException(404, f"no dataset with id {dataset_id!r}")
    return dataset


def datasets_dir(services: Any) -> Path:
    return services.settings.data_dir / "datasets"


@router.post("", status_code=201, summary="Create a named, empty dataset")
def create(body: DatasetCreate, user: Trainer, session: DbSession) -> dict[str, Any]:
    dataset = create_dataset(session, name=body.name, description=body.description, created_by=user.username,
                             seed=body.seed)
    accounts.record(session, username=user.username, action="dataset.create", target=dataset.id, detail=dataset.name)
    session.commit()  # before the answer: the next request must see it
    return dataset_json(dataset)


@router.get("", summary="All datasets with their counts, sites and split (no case list)")
def datasets(_user: Trainer, session: DbSession) -> list[dict[str, Any]]:
    return [dataset_json(d, with_cases=False) for d in list_datasets(session)]


@router.get("/{dataset_id}", summary="A dataset: cases, patients and split, sites, label coverage")
def dataset(dataset_id: str, _user: Trainer, session: DbSession) -> dict[str, Any]:
    data = dataset_json(load_dataset_row(session, dataset_id))
    accounts.record(session, username=_user.username, action="dataset.view", target=dataset_id)
    return data


def _public(text: str, folder: Path, names: dict[Path, str] | None = None) -> str:
    """Error text without the server's folders: a received file's path becomes the client's name
    for it (``names``; on disk it is only numbered), then the case folder's, then any other."""
    return public_text(text, (*(names or {}).items(), (folder / "ct", "the upload/ct"),
                              (folder / "labels", "the upload/labels"), (folder, "the upload")))


def default_case_name(services: Any, dataset_id: str) -> str:
    """``case-N``, the first number not taken in the dataset. Never the uploaded file's or
    folder's name: a client names files after the patient as often as not, and a case's name goes
    into the database, the audit trail and the cards of versions trained on it."""
    with services.database.session() as session:
        taken = {c.name for c in load_dataset_row(session, dataset_id).cases}
    number = len(taken) + 1
    while f"case-{number}" in taken:
        number += 1
    return f"case-{number}"


def _field_of(exc: InputError, folder: Path) -> str:
    """Which form field an error is about: the CT files, the label map, or a text field."""
    if exc.source == "truth" or str(folder / "labels") in exc.source:
        return "truth"
    if exc.source == "files" or str(folder / "ct") in exc.source or str(folder) == exc.source:
        return "files"
    return exc.source


@router.post("/{dataset_id}/cases", status_code=201, openapi_extra=CASE_UPLOAD_SCHEMA, max_body_size=STREAMED_BODY,
             dependencies=[NeedsDiskRoom],
             summary="Add a labelled case by upload (validated first; nothing is kept when refused)")
async def upload_case(dataset_id: str, request: Request, user: Trainer, services: Services) -> dict[str, Any]:
    await run_in_session(services, lambda session: load_dataset_row(session, dataset_id))
    case_id = new_id()
    folder = case_folder(datasets_dir(services), dataset_id, case_id)
    names: dict[Path, str] = {}  # disk path -> the client's name, for errors
    try:
        received = await receive_upload(request, folder / "ct", folder / "labels", services.settings.max_upload_bytes)
        if received.truth is None:
            raise InputError("truth", "a label map is required (field 'truth')")
        names = received.files | {received.truth[0]: received.truth[1]}
        fields = received.fields
        patient = check_name(fields.get("patient", ""), "patient")
        site = check_name(fields["site"], "site") if fields.get("site", "").strip() else ""
        convention = check_convention(fields.get("convention") or "auto")
        partial = fields.get("partial", "").lower() in ("1", "true", "yes", "on")
        ct_path, kind = await run_in_threadpool(arrange_input, received.files, folder / "ct", services.settings)
        names |= received.files  # a zip's entries, which arrange_input put in place of the zip
        name = check_name(fields.get("name") or await run_in_threadpool(default_case_name, services, dataset_id),
                          "name")
        labels_path = await run_in_threadpool(unpack_truth, received.truth[0], extract_limit_bytes(services.settings))
        coverage = await run_in_threadpool(validate_case, ct_path, labels_path, convention)
        # validated, so stored de-identified (PS3.15 Basic Profile, NIfTI header text cleared)
        ct_path = (await run_in_threadpool(deidentify_input, ct_path, kind, folder / "ct", services.settings)).path
        if labels_path.is_file():
            labels_path = await run_in_threadpool(deidentify_truth, labels_path)

        def record(session: Session) -> dict[str, Any]:
            dataset = load_dataset_row(session, dataset_id)
            case = add_case(session, dataset=dataset, case_id=case_id, name=name, patient=patient, site=site,
                            convention=convention, partial=partial, ct_path=str(ct_path),
                            labels_path=str(labels_path), coverage=coverage, added_by=user.username)
            accounts.record(session, username=user.username, action="dataset.add_case", target=dataset_id,
                            detail=f"{name} (patient {patient}, site {site or '-'})")
            return {"case_id": case.id, "dataset": dataset_json(dataset)}

        return await run_in_session(services, record)
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        exc.field = getattr(exc, "field", None) or _field_of(exc, folder)
        exc.source, exc.reason = _public(exc.source, folder, names), _public(exc.reason, folder, names)
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _copy_into(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        return Path(shutil.copytree(source, target_dir / "series"))
    return Path(shutil.copy2(source, target_dir / source.name))


@router.post("/{dataset_id}/cases/from-study", status_code=201, dependencies=[NeedsDiskRoom],
             summary="Add a case from an existing study that came with a ground truth")
async def case_from_study(dataset_id: str, body: Annotated[CaseFromStudy, Body()], user: Trainer,
                          services: Services) -> dict[str, Any]:
    def source_of(session: Session) -> tuple[Path, Path, str, str]:
        load_dataset_row(session, dataset_id)
        study = get_study(session, study_id=body.study_id)
        if study is None:
            raise HTTPException(404, f"no study with id {body.study_id!r}")
        if study.truth_path is None:
            raise InputError("study_id", f"study {study.id} has no ground truth to train on")
        name = check_name(body.name or study.name[:100], "name")
        site = check_name(body.site, "site") if body.site else study.site
        return Path(study.input_path), Path(study.truth_path), name, site

    input_path, truth_path, name, site = await run_in_session(services, source_of)
    patient = check_name(body.patient, "patient")
    convention = check_convention(body.convention)
    case_id = new_id()
    folder = case_folder(datasets_dir(services), dataset_id, case_id)
    try:
        ct_path = await run_in_threadpool(_copy_into, input_path, folder / "ct")
        labels_path = await run_in_threadpool(_copy_into, truth_path, folder / "labels")
        coverage = await run_in_threadpool(validate_case, ct_path, labels_path, convention)

        def record(session: Session) -> dict[str, Any]:
            dataset = load_dataset_row(session, dataset_id)
            case = add_case(session, dataset=dataset, case_id=case_id, name=name, patient=patient, site=site,
                            convention=convention, partial=body.partial, ct_path=str(ct_path),
                            labels_path=str(labels_path), coverage=coverage, added_by=user.username,
                            source_study_id=body.study_id)
            accounts.record(session, username=user.username, action="dataset.add_case", target=dataset_id,
                            detail=f"{name} from study {body.study_id}")
            return {"case_id": case.id, "dataset": dataset_json(dataset)}

        return await run_in_session(services, record)
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        exc.source, exc.reason = _public(exc.source, folder), _public(exc.reason, folder)
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@router.delete("/{dataset_id}/cases/{case_id}", summary="Remove a case (not once a version was trained on it)",
               dependencies=[FreesDisk])
def remove_case(dataset_id: str, case_id: str, user: Trainer, session: DbSession,
                services: Services) -> dict[str, Any]:
    dataset = load_dataset_row(session, dataset_id)
    case = get_case(session, dataset_id=dataset_id, case_id=case_id)
    if case is None:
        raise HTTPException(404, f"dataset {dataset.name!r} has no case {case_id!r}")
    if dataset.locked_by:
        raise HTTPException(409, f"dataset {dataset.name!r} is locked: version {dataset.locked_by} was trained on it")
    delete_case(session, case=case, datasets_dir=datasets_dir(services))
    accounts.record(session, username=user.username, action="dataset.remove_case", target=dataset_id,
                    detail=case.name)
    session.commit()  # before the answer: the next request must see it
    session.refresh(dataset)
    return dataset_json(dataset)


@router.put("/{dataset_id}/split", summary="Choose the split of patients (train/val/test/auto); 409 once locked")
def edit_split(dataset_id: str, body: SplitUpdate, user: Trainer, session: DbSession) -> dict[str, Any]:
    dataset = load_dataset_row(session, dataset_id)
    if dataset.locked_by:
        raise HTTPException(409, f"the split of dataset {dataset.name!r} is locked: version {dataset.locked_by} "
                                 "was trained on it (create a new dataset to change it)")
    set_split(session, dataset=dataset, assignments=body.patients)
    accounts.record(session, username=user.username, action="dataset.split", target=dataset_id,
                    detail=", ".join(f"{p}={s}" for p, s in sorted(body.patients.items())))
    session.commit()  # before the answer: the next request must see it
    return dataset_json(dataset)
