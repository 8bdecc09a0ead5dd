"""Resumable uploads: their rows (``Upload``) and their folders, ``DATA_DIR/uploads/<id>/``.

```
0.part, 1.part, ...   the bytes received so far of each announced file, by index; a part's
                      length is the file's offset (what the next chunk must start at)
```

The row is committed before the folder is made and deleted before the folder is removed, so a
folder without a row is always left over from a crash and safe to remove.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from spineseg.store.models import Upload

UPLOADING, COMPLETING, DONE = "uploading", "completing", "done"
_ID = re.compile(r"[0-9a-f]{32}")


def _now() -> datetime:
    return datetime.now(UTC)


def create_upload(session: Session, *, upload_id: str, owner_id: int, purpose: str,
                  files: list[dict[str, Any]], study_name: str = "", study_site: str = "") -> Upload:
    """A new upload of ``files`` (``[{"name", "size", "role"}]``, in index order), for a study
    to be named ``study_name`` (``""``: the default) at ``study_site``. The names are kept
    only until the upload is done (``mark_done``) or removed."""
    upload = Upload(id=upload_id, owner_id=owner_id, purpose=purpose, status=UPLOADING, files=files,
                    total_bytes=sum(int(f["size"]) for f in files), study_name=study_name, study_site=study_site)
    session.add(upload)
    session.flush()
    return upload


def get_upload(session: Session, *, upload_id: str, owner_id: int) -> Upload | None:
    """The upload, only for its owner (anyone else gets ``None``, as for an unknown id)."""
    upload = session.get(Upload, upload_id)
    return upload if upload is not None and upload.owner_id == owner_id else None


def touch_upload(session: Session, *, upload_id: str) -> None:
    """Record activity (a chunk arrived), which keeps the upload from being swept as stale."""
    session.execute(update(Upload).where(Upload.id == upload_id).values(updated_at=_now()))


def set_status(session: Session, *, upload_id: str, from_status: str, to_status: str) -> bool:
    """Move an upload from one status to another; ``False`` when it was not in ``from_status``
    (so two requests to complete the same upload cannot both start the ingest)."""
    result = session.execute(update(Upload).where(Upload.id == upload_id, Upload.status == from_status)
                             .values(status=to_status, updated_at=_now()))
    return result.rowcount == 1


def begin_completion(session: Session, *, upload_id: str, study_id: str) -> bool:
    """``uploading -> completing``, recording the id the new study will get (guarded: ``False``
    when another request got there first). A crash from here on is resolved at the next start by
    ``interrupted_completions``: the study exists (done) or it does not (uploading again)."""
    result = session.execute(update(Upload).where(Upload.id == upload_id, Upload.status == UPLOADING)
                             .values(status=COMPLETING, study_id=study_id, updated_at=_now()))
    return bool(result.rowcount)


def reopen_upload(session: Session, *, upload_id: str) -> None:
    """``completing -> uploading`` after a completion that failed for a reason other than the
    files (a busy database, a stopped server): the parts are still there, complete may be retried."""
    session.execute(update(Upload).where(Upload.id == upload_id, Upload.status == COMPLETING)
                    .values(status=UPLOADING, study_id=None, updated_at=_now()))


def interrupted_completions(session: Session) -> list[Upload]:
    """Uploads left ``completing`` by a server that stopped in the middle."""
    return list(session.scalars(select(Upload).where(Upload.status == COMPLETING)))


def mark_done(session: Session, *, upload_id: str, study_id: str, job_id: str) -> None:
    """The upload became ``study_id``: done, and the names the client announced are erased
    (a file or folder is often named after the patient; only sizes and roles stay)."""
    upload = session.get(Upload, upload_id)
    files = [{"name": "", "size": int(f["size"]), "role": f["role"]} for f in (upload.files if upload else [])]
    session.execute(update(Upload).where(Upload.id == upload_id)
                    .values(status=DONE, study_id=study_id, job_id=job_id, files=files, updated_at=_now()))


def delete_upload(session: Session, *, upload_id: str) -> bool:
    result = session.execute(delete(Upload).where(Upload.id == upload_id))
    return result.rowcount == 1


def stale_upload_ids(session: Session, *, idle_since: datetime) -> list[str]:
    """Uploads (in any status) with no activity since ``idle_since``."""
    return list(session.scalars(select(Upload.id).where(Upload.updated_at < idle_since)))


def declared_bytes_in_progress(session: Session) -> dict[str, int]:
    """``{upload id: bytes announced}`` of every upload not done yet (uploading or completing)."""
    rows = session.execute(select(Upload.id, Upload.total_bytes).where(Upload.status.in_((UPLOADING, COMPLETING))))
    return {upload_id: int(total) for upload_id, total in rows}


def upload_ids(session: Session) -> set[str]:
    return set(session.scalars(select(Upload.id)))


@dataclass(frozen=True)
class UploadFolder:
    """The folder of one upload and its part files."""

    root: Path

    @classmethod
    def of(cls, uploads_dir: Path, upload_id: str) -> UploadFolder:
        if not _ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return cls(uploads_dir / upload_id)

    def part(self, index: int) -> Path:
        return self.root / f"{index}.part"

    def received(self, index: int) -> int:
        """Bytes of file ``index`` on disk (0 before its first chunk)."""
        try:
            return self.part(index).stat().st_size
        except FileNotFoundError:
            return 0

    def received_total(self) -> int:
        """Bytes of all its part files on disk (one directory scan)."""
        try:
            with os.scandir(self.root) as entries:
                return sum(e.stat().st_size for e in entries if e.name.endswith(".part") and e.is_file())
        except FileNotFoundError:
            return 0

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def upload_folders(uploads_dir: Path) -> list[UploadFolder]:
    """Every upload folder on disk (by name: 32 hex digits)."""
    if not uploads_dir.is_dir():
        return []
    return [UploadFolder(p) for p in uploads_dir.iterdir() if p.is_dir() and _ID.fullmatch(p.name)]
