"""Every corrected study into a dataset in one step (issue 32 item 3), researchers.

Each study with a correction that the dataset does not hold yet becomes a case: its CT and its
newest correction (VerSe ids) copied into the dataset's folder and checked as any case is. The
patient is the study's pseudonym (so the dataset's split keeps a patient's studies together),
or the study itself when its upload named no patient. The case name carries the correction's
version, so a version trained on the dataset lists, on its card, which corrections it saw.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.services.datasets import dataset_json, validate_case
from spineseg.store import accounts
from spineseg.store.corrections import corrected_study_ids, file_of, latest_correction
from spineseg.store.datasets import add_case, case_folder
from spineseg.store.files import StudyFiles
from spineseg.store.studies import get_study, new_id
from spineseg.web.deps import NeedsDiskRoom, Services, run_in_session
from spineseg.web.routes.datasets import datasets_dir, load_dataset_row
from spineseg.web.training_deps import Trainer

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

CONVENTION = "verse"  # a correction holds VerSe ids


@dataclass(frozen=True)
class CorrectedSource:
    study_id: str
    ct: Path
    labels: Path
    name: str
    patient: str
    site: str


def _copy(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        return Path(shutil.copytree(source, target_dir / "series"))
    return Path(shutil.copy2(source, target_dir / source.name))


@router.post("/{dataset_id}/cases/from-corrections", status_code=201, dependencies=[NeedsDiskRoom],
             summary="Add every corrected study (its newest correction) that the dataset does not hold yet")
async def cases_from_corrections(dataset_id: str, user: Trainer, services: Services) -> dict[str, Any]:
    studies_dir = services.settings.studies_dir

    def sources(session: Session) -> list[CorrectedSource]:
        dataset = load_dataset_row(session, dataset_id)
        if dataset.locked_by:
            raise HTTPException(409, f"dataset {dataset.name!r} is locked: version {dataset.locked_by} was trained "
                                     "on it")
        held = {case.source_study_id for case in dataset.cases}
        found = []
        for study_id in sorted(corrected_study_ids(session) - held):
            study = get_study(session, study_id=study_id)
            latest = latest_correction(study) if study is not None else None
            if latest is None:
                continue
            found.append(CorrectedSource(study.id, Path(study.input_path),
                                         file_of(StudyFiles.of(studies_dir, study.id).root, latest),
                                         f"study {study.id[:8]} correction v{latest.version}",  # not its name
                                         study.patient_pseudonym or f"study-{study.id[:12]}", study.site))
        return found

    added, refused = [], []
    for source in await run_in_session(services, sources):
        case_id = new_id()
        folder = case_folder(datasets_dir(services), dataset_id, case_id)
        try:
            ct_path = await run_in_threadpool(_copy, source.ct, folder / "ct")
            labels_path = await run_in_threadpool(_copy, source.labels, folder / "labels")
            coverage = await run_in_threadpool(validate_case, ct_path, labels_path, CONVENTION)

            def record(session: Session, source: CorrectedSource = source, ct_path: Path = ct_path,
                       labels_path: Path = labels_path, coverage: dict[str, Any] = coverage,
                       case_id: str = case_id) -> None:
                dataset = load_dataset_row(session, dataset_id)
                add_case(session, dataset=dataset, case_id=case_id, name=source.name, patient=source.patient,
                         site=source.site, convention=CONVENTION, partial=False, ct_path=str(ct_path),
                         labels_path=str(labels_path), coverage=coverage, added_by=user.username,
                         source_study_id=source.study_id)
                accounts.record(session, username=user.username, action="dataset.add_case", target=dataset_id,
                                detail=f"{source.name} from study {source.study_id}")

            await run_in_session(services, record)
            added.append({"case_id": case_id, "study_id": source.study_id, "name": source.name,
                          "patient": source.patient})
        except InputError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            refused.append({"study_id": source.study_id, "reason": exc.reason})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def answer(session: Session) -> dict[str, Any]:
        return {"added": added, "refused": refused, "dataset": dataset_json(load_dataset_row(session, dataset_id))}

    return await run_in_session(services, answer)
