"""The one way a study is deleted (by a user from the API or the studies page, or by the
retention sweep): cancel its jobs, delete its rows with an audit row in the same transaction,
commit, then remove its files."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from spineseg.store import accounts
from spineseg.store.files import StudyFiles
from spineseg.store.models import Study
from spineseg.store.studies import delete_study, request_cancel

log = logging.getLogger(__name__)


def delete_study_and_files(session: Session, *, study: Study, studies_dir: Path, username: str,
                           reason: str = "") -> None:
    """Delete ``study`` (rows audited as ``delete`` by ``username``, ``reason`` as the detail),
    commit, then remove ``studies_dir/<id>``. Files go last: a failed commit leaves them."""
    study_id = study.id
    for job in study.jobs:
        request_cancel(session, job_id=job.id)
    delete_study(session, study_id=study_id)
    accounts.record(session, username=username, action="delete", target=study_id, detail=reason)
    session.commit()
    StudyFiles.of(studies_dir, study_id).delete()
    log.debug("study %s deleted by %s %s", study_id, username, reason)
