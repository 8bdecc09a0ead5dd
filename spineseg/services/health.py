"""Health of a running service: is the database answering, the queue reachable, the registry
readable, the production model intact, the disk not full?

``check_health`` runs every check once and returns a ``HealthReport``; ``HealthMonitor`` runs
it on a thread every few seconds and keeps the latest report, so ``/api/health`` answers at
once from memory and never waits on the database it reports on. A report older than
``STALE_AFTER_S`` is itself a failure (a check is hanging).

Each check is ``ok``, ``warn`` or ``fail``. The service is ``unavailable`` (HTTP 503) when a
check fails: it cannot do its job (store a study, segment it). It is ``degraded`` when a check
warns (little disk left, no worker running here) and ``ok`` otherwise. Details never contain
server paths.

With the service's ``DiskRoom`` (issue 30.4) the disk check compares the free space with the
reserve (SPINESEG_DISK_RESERVE_MB): below it the service is *read-mostly* (pages, downloads and
deletions work, new work is refused with 507): the check warns with the figures and the report's
``mode`` says ``read-mostly`` (``normal`` otherwise); it is not a failure, so the service stays
reachable for the deletions that free the space.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from spineseg.errors import SpineSegError, strip_server_paths
from spineseg.registry import Registry
from spineseg.services.disk_room import DiskRoom
from spineseg.store.database import Database

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
INTERVAL_S = 5.0
STALE_AFTER_S = 30.0
# Below these free bytes in the data directory the service warns, then refuses to take work
# (a 512x512x1000 CT with its outputs needs about 1 GB).
DISK_WARN_BYTES = 2 * 2**30
DISK_FAIL_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Check:
    status: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


def overall_status(checks: dict[str, Check]) -> str:
    """``unavailable`` when a check failed, ``degraded`` when one warns, else ``ok``."""
    states = {check.status for check in checks.values()}
    return "unavailable" if FAIL in states else "degraded" if WARN in states else "ok"


@dataclass
class HealthReport:
    """Every check's outcome, when they ran, and facts the clients read (model, queue)."""

    checks: dict[str, Check]
    checked_at: float = field(default_factory=time.time)
    production_model: str | None = None
    queued: int | None = None
    read_mostly: bool = False  # the free disk is below the reserve: new work is refused (507)

    @property
    def status(self) -> str:
        return overall_status(self.checks)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        age = max(0.0, (now or time.time()) - self.checked_at)
        checks = dict(self.checks)
        if age > STALE_AFTER_S:
            checks["monitor"] = Check(FAIL, f"the checks have not completed for {age:.0f} s (a check is hanging)")
        return {
            "status": overall_status(checks),
            "mode": "read-mostly" if self.read_mostly else "normal",
            "checks": {name: check.to_json() for name, check in checks.items()},
            "production_model": self.production_model,
            "queued": self.queued,
            "checked_at": datetime.fromtimestamp(self.checked_at, UTC).isoformat(),
            "age_s": round(age, 2),
        }


def _describe(exc: BaseException) -> str:
    return strip_server_paths(f"{type(exc).__name__}: {exc}")[:300]


def check_database(database: Database) -> Check:
    try:
        with database.engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        return Check(FAIL, "the database does not answer: " + _describe(exc.orig or exc))
    return Check(OK, f"answering, schema {version}")


def check_registry(registry: Registry) -> tuple[Check, Check, str | None]:
    """(registry state, production model, production id): the state file must parse and the
    production weights must match their recorded sha256 (re-hashed only when the file changed)."""
    try:
        production_id = registry.production_id()
    except SpineSegError as exc:
        failed = Check(FAIL, "the registry cannot be read: " + _describe(exc))
        return failed, Check(FAIL, "unknown: the registry cannot be read"), None
    state = Check(OK, f"{len(registry.version_ids())} version(s)")
    if production_id is None:
        return state, Check(FAIL, "no production model: the service cannot segment (promote a version)"), None
    try:
        model = registry.production()
    except SpineSegError as exc:
        return state, Check(FAIL, f"production model {production_id} is unusable: {_describe(exc)}"), production_id
    except OSError as exc:
        return state, Check(FAIL, f"production model {production_id} cannot be read: {_describe(exc)}"), production_id
    assert model is not None
    return state, Check(OK, f"{model.id}, weights verified"), production_id


def check_disk(folder: Path) -> Check:
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check(FAIL, "the data directory cannot be read: " + _describe(exc))
    text_free = f"{free / 2**30:.1f} GiB free"
    if free < DISK_FAIL_BYTES:
        return Check(FAIL, f"{text_free}: below {DISK_FAIL_BYTES / 2**20:.0f} MiB, uploads cannot be stored")
    if free < DISK_WARN_BYTES:
        return Check(WARN, f"{text_free}: below {DISK_WARN_BYTES / 2**30:.0f} GiB")
    return Check(OK, text_free)


def check_disk_room(disk: DiskRoom) -> tuple[Check, bool]:
    """(check, read-mostly) from the service's ``DiskRoom``: below the reserve is a warning that
    says the service is read-mostly and why."""
    try:
        room = disk.room()
    except OSError as exc:
        return Check(FAIL, "the data directory cannot be read: " + _describe(exc)), True
    return Check(WARN if room.read_mostly else OK, room.describe()), room.read_mostly


def check_queue(pending: Callable[[], int], workers: int) -> tuple[Check, int | None]:
    try:
        queued = pending()
    except Exception as exc:  # any storage error of the queue library is a failed check
        return Check(FAIL, "the job queue cannot be read: " + _describe(exc)), None
    if workers < 1:
        return Check(WARN, f"{queued} job(s) waiting; no worker runs in this process"), queued
    return Check(OK, f"{queued} job(s) waiting, {workers} worker(s)"), queued


def check_health(*, database: Database, registry: Registry, data_dir: Path, pending: Callable[[], int],
                 workers: int, disk: DiskRoom | None = None) -> HealthReport:
    """Run every check once (seconds at most: the database's busy timeout bounds the slowest).
    With ``disk`` the disk check is against its reserve (``check_disk_room``)."""
    state, production, production_id = check_registry(registry)
    queue, queued = check_queue(pending, workers)
    read_mostly = False
    if disk is not None:
        disk.forget()  # a fresh measurement: it also gives up or makes the room kept for deletions
        disk_check, read_mostly = check_disk_room(disk)
    else:
        disk_check = check_disk(data_dir)
    checks = {"database": check_database(database), "queue": queue, "registry": state,
              "production_model": production, "disk": disk_check}
    return HealthReport(checks, production_model=production_id, queued=queued, read_mostly=read_mostly)


class HealthMonitor:
    """Runs ``probe`` now and every ``interval_s`` on a daemon thread; ``latest`` is the newest
    report (never waits)."""

    def __init__(self, probe: Callable[[], HealthReport], interval_s: float = INTERVAL_S) -> None:
        self._probe, self._interval = probe, interval_s
        self._logged: dict[str, str] = {}  # each check's last status: changes are logged once
        self._latest = self._run()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> HealthReport:
        try:
            report = self._probe()
        except Exception as exc:  # a failing probe is reported, never raised
            log.exception("health check failed")
            report = HealthReport({"monitor": Check(FAIL, "the health check itself failed: " + _describe(exc))})
        for name, check in report.checks.items():
            if self._logged.get(name) != check.status and (check.status != OK or name in self._logged):
                log.log(logging.INFO if check.status == OK else logging.WARNING, "health: %s is %s: %s",
                        name, check.status, check.detail)
            self._logged[name] = check.status
        return report

    @property
    def latest(self) -> HealthReport:
        return self._latest

    def check_now(self) -> HealthReport:
        """Run the checks on the calling thread and keep the report (after a promotion or a
        rollback, so the next ``/api/health`` already names the new production model)."""
        self._latest = self._run()
        return self._latest

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="spineseg-health", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self._latest = self._run()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
