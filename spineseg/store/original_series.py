"""The server-private identifiers of an uploaded DICOM study's original series (table
``original_series``, migration 0011).

A browser or API upload is de-identified before it is stored (``services.deidentification``),
so its SEG and RTSTRUCT reference replaced UIDs and a pseudonym. Kept here, apart from the
study and never in its files, sealed by ``services.original_series`` (a copy of the database
alone reads nothing): the map stored UID -> original UID (study, series, instances, frame of
reference) and the original patient and study attributes, so a download "for the original
series" can reference the images the hospital holds. Removed with the study (``ondelete``
cascade). Studies from a PACS keep theirs in ``store.pacs_links`` instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from spineseg.store.models import Base, utc_now


class OriginalSeries(Base):
    __tablename__ = "original_series"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


def keep_original(session: Session, *, study_id: str, sealed: str) -> OriginalSeries:
    row = OriginalSeries(study_id=study_id, sealed=sealed)
    session.add(row)
    session.flush()
    return row


def get_original(session: Session, *, study_id: str) -> OriginalSeries | None:
    return session.get(OriginalSeries, study_id)
