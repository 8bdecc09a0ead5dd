"""The server-private link from a study to the PACS it came from (table ``pacs_links``,
migration 0007).

A study imported over DICOMweb or received on the DICOM network is de-identified like any
upload: its stored files carry replaced UIDs and a pseudonym. To send a result back so that it
shows beside the original images, the server keeps, here and nowhere else, the source's
endpoint (or calling AE title), its original Study / Series Instance UIDs and ``uid_map``
(stored UID -> original UID). ``return_header`` holds the original patient and study
attributes only for studies received on the DICOM network (DICOMweb reads them back from the
PACS when sending); it is erased once the result was sent. Nothing of this table is shown by
the API, the pages or written to an output other than the result sent back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from spineseg.store.models import Base, Job, Study, utc_now

ORIGINS = ("dicomweb", "dimse")


class PacsLink(Base):
    __tablename__ = "pacs_links"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))  # dicomweb | dimse
    endpoint: Mapped[str] = mapped_column(String(64))  # endpoint name, or the calling AE title
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    uid_map: Mapped[dict[str, str]] = mapped_column(JSON)
    return_header: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sent_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the run last sent back
    send_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


def add_link(session: Session, *, study_id: str, origin: str, endpoint: str, study_uid: str, series_uid: str,
             uid_map: dict[str, str], return_header: dict[str, Any] | None = None) -> PacsLink:
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    link = PacsLink(study_id=study_id, origin=origin, endpoint=endpoint[:64], study_uid=study_uid,
                    series_uid=series_uid, uid_map=dict(uid_map), return_header=return_header)
    session.add(link)
    session.flush()
    return link


def get_link(session: Session, *, study_id: str) -> PacsLink | None:
    return session.get(PacsLink, study_id)


def links_awaiting_send(session: Session, *, origin: str) -> list[tuple[PacsLink, Job]]:
    """Links of ``origin`` whose study's newest job is done and was not sent back yet."""
    found: list[tuple[PacsLink, Job]] = []
    for link in session.scalars(select(PacsLink).where(PacsLink.origin == origin)):
        study = session.get(Study, link.study_id)
        done = [j for j in (study.jobs if study is not None else []) if j.kind == "segment" and j.status == "done"]
        job = done[-1] if done else None  # the newest finished run
        if job is not None and job.id != link.sent_job_id:
            found.append((link, job))
    return found


def mark_sent(session: Session, *, study_id: str, job_id: str) -> None:
    """The result of ``job_id`` reached the PACS: remember it and erase the return header."""
    link = session.get(PacsLink, study_id)
    if link is not None:
        link.sent_job_id = job_id
        link.send_error = None
        link.return_header = None


def mark_send_failed(session: Session, *, study_id: str, error: str) -> None:
    link = session.get(PacsLink, study_id)
    if link is not None:
        link.send_error = error[:2000]
