"""Retention: studies older than ``SPINESEG_RETENTION_DAYS`` are deleted with their files,
each deletion audited (user ``retention``), by ``spineseg retention run`` and once a day by
the service. Off (``0``) by default. Only studies: datasets, their cases and model versions
are never touched (they are not studies, and a trained model's provenance needs them).

Whatever the setting, each run also erases the DICOM listener's sealed return headers whose
time is up (``store.pacs_links.erase_expired_headers``; the listener does it too while it runs),
so a patient's attributes never outlive ``SPINESEG_DICOM_RETURN_DAYS`` because it is stopped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.services.study_deletion import delete_study_and_files
from spineseg.store import accounts
from spineseg.store.database import Database
from spineseg.store.models import Study
from spineseg.store.pacs_links import erase_expired_headers

log = logging.getLogger(__name__)

RETENTION_ACTOR = "retention"
SWEEP_INTERVAL_S = 24 * 3600.0
FIRST_SWEEP_DELAY_S = 60.0  # after start-up, so a start is not slowed by a large first sweep


@dataclass(frozen=True)
class RetentionResult:
    cutoff: datetime | None
    deleted: list[str]
    identities_erased: list[str] = field(default_factory=list)  # studies whose return header expired


def retention_cutoff(days: int, now: datetime | None = None) -> datetime | None:
    """Studies created before this are expired; ``None`` when retention is off (``days == 0``)."""
    if days < 0:
        raise InputError("SPINESEG_RETENTION_DAYS", f"{days!r} must be 0 (off) or a number of days")
    if days == 0:
        return None
    return (now or datetime.now(UTC)) - timedelta(days=days)


def run_retention(database: Database, settings: Settings, *, days: int | None = None,
                  now: datetime | None = None, dry_run: bool = False) -> RetentionResult:
    """Delete every study created more than ``days`` (default: the setting) ago, one commit
    each (a crash keeps what was done); ``dry_run`` only lists them."""
    days = settings.retention_days if days is None else days
    cutoff = retention_cutoff(days, now)
    erased: list[str] = []
    if not dry_run:
        with database.session() as session:
            erased = erase_expired_headers(session, now=now)
            for study_id in erased:
                accounts.record(session, username=RETENTION_ACTOR, action="pacs.identity_expired", target=study_id,
                                detail="the sealed return header was erased unsent: its time was up")
        if erased:
            log.info("retention: erased the expired return headers of %d PACS studies", len(erased))
    if cutoff is None:
        return RetentionResult(None, [], erased)
    with database.session() as session:
        expired = list(session.scalars(select(Study.id).where(Study.created_at < cutoff).order_by(Study.created_at)))
    if dry_run:
        return RetentionResult(cutoff, expired)
    deleted = []
    for study_id in expired:
        with database.session() as session:
            study = session.get(Study, study_id)
            if study is None:  # deleted meanwhile
                continue
            delete_study_and_files(session, study=study, studies_dir=settings.studies_dir,
                                   username=RETENTION_ACTOR, reason=f"older than {days} days")
        deleted.append(study_id)
    if deleted:
        log.info("retention: deleted %d studies created before %s", len(deleted), cutoff.isoformat())
    return RetentionResult(cutoff, deleted, erased)


class RetentionSweeper:
    """A daemon thread running ``run_retention`` once a day (only when retention is on)."""

    def __init__(self, database: Database, settings: Settings, *, interval_s: float = SWEEP_INTERVAL_S,
                 first_delay_s: float = FIRST_SWEEP_DELAY_S) -> None:
        self.database = database
        self.settings = settings
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RetentionSweeper:
        retention_cutoff(self.settings.retention_days)  # a negative setting fails the start, naming it
        if self.settings.retention_days > 0:
            self._thread = threading.Thread(target=self._loop, name="spineseg-retention", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        wait_s = self.first_delay_s
        while not self._stop.wait(wait_s):
            try:
                run_retention(self.database, self.settings)
            except Exception:  # logged with its traceback; the next sweep tries again
                log.exception("retention sweep failed")
            wait_s = self.interval_s

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
