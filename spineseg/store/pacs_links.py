"""The server-private link from a study to the PACS it came from (table ``pacs_links``,
migration 0007).

A study imported over DICOMweb or received on the DICOM network is de-identified like any
upload: its stored files carry replaced UIDs and a pseudonym. To send a result back so that it
shows beside the original images, the server keeps, here and nowhere else, the source's
endpoint (or calling AE title), its original Study / Series Instance UIDs and ``uid_map``
(stored UID -> original UID). ``return_header`` holds the original patient and study
attributes only for studies received on the DICOM network with a destination to send the
result to (DICOMweb reads them back from the PACS when sending), sealed with the server's key
(``services.sealing``: a token, never the attributes themselves), and only until the result
was sent or ``return_header_expires_at`` passed (``erase_expired_headers``), whichever comes
first. Nothing of this table is shown by the API, the pages or written to an output other
than the result sent back.
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
    # a sealed token (str); a dict only in rows written before migration 0013 (sealed at the next start)
    return_header: Mapped[str | dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    return_header_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
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


def set_return_header(session: Session, *, study_id: str, sealed: str, expires_at: datetime) -> None:
    """Keep the sealed return header of a DICOM-network study until ``expires_at``."""
    link = session.get(PacsLink, study_id)
    if link is None:
        raise ValueError(f"study {study_id!r} has no PACS link")
    link.return_header = sealed
    link.return_header_expires_at = expires_at


def erase_expired_headers(session: Session, *, now: datetime | None = None) -> list[str]:
    """Erase every return header whose time is up (never sent: the destination was down for
    that long, or refused it); returns the study ids. Their ``send_error`` says why nothing
    more will be sent."""
    moment = now or utc_now()
    expired = [link for link in session.scalars(select(PacsLink).where(PacsLink.return_header_expires_at < moment))
               if link.return_header is not None]  # JSON null is not SQL NULL: tested in Python
    for link in expired:
        link.return_header = None
        link.return_header_expires_at = None
        link.send_error = ("the original's patient and study attributes expired before the result could be sent, "
                           "so it was not sent: download the DICOM SEG and file it by hand")
    return [link.study_id for link in expired]


def unsealed_headers(session: Session) -> list[PacsLink]:
    """Links whose return header is still stored as attributes (written before migration 0013)."""
    return [link for link in session.scalars(select(PacsLink).where(PacsLink.origin == "dimse"))
            if isinstance(link.return_header, dict)]


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
        link.return_header_expires_at = None


def mark_send_failed(session: Session, *, study_id: str, error: str) -> None:
    link = session.get(PacsLink, study_id)
    if link is not None:
        link.send_error = error[:2000]
