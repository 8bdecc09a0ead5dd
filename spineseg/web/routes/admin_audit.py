"""The audit trail for admins: filtered events (JSON, CSV) and the chain's state."""

from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.store import audit
from spineseg.store.models import AuditEvent
from spineseg.web.deps import Admin, DbSession

router = APIRouter(tags=["admin"])

MAX_LIMIT = 1000
CHAIN_STATE_MAX_AGE_S = 60.0  # the admin page re-walks the chain at most this often (unless asked)
CSV_COLUMNS = ("seq", "at", "username", "action", "target", "detail", "prev_hmac", "hmac")


def _date(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(name, f"expected a date like 2026-11-24, got {value!r}") from exc
    if end and len(value) <= 10:  # a whole day: up to its end
        moment += timedelta(days=1)
    return moment


@dataclass
class AuditFilters:
    """Filters of the audit views; ``date_to`` includes that whole day."""

    user: str = ""
    action: str = ""
    date_from: str = ""
    date_to: str = ""
    limit: int = 200

    def query(self) -> dict[str, Any]:
        return {"username": self.user or None, "action": self.action or None,
                "date_from": _date(self.date_from, "date_from"), "date_to": _date(self.date_to, "date_to", end=True)}


def _filters(
    user: Annotated[str, Query(description="exact user name")] = "",
    action: Annotated[str, Query(description="an action, or a prefix such as `user` for user.*")] = "",
    date_from: Annotated[str, Query(description="ISO date or time, inclusive")] = "",
    date_to: Annotated[str, Query(description="ISO date (that whole day) or time")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 200,
) -> AuditFilters:
    return AuditFilters(user, action, date_from, date_to, limit)


audit_filters = Depends(_filters)


class ChainState:
    """The last full verification, shared by admin page loads: walking a long chain takes
    seconds (about 4 s per 100 000 rows), so a page shows a state at most a minute old, with
    when it was checked; ``/admin?verify=1`` and ``GET /api/audit/verify`` always walk it now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: audit.ChainReport | None = None
        self._checked_at = datetime.now(UTC)
        self._checked_mono = 0.0

    def get(self, session: Session, *, fresh: bool = False) -> tuple[audit.ChainReport, datetime]:
        with self._lock:  # one walk at a time; others wait for its result
            stale = time.monotonic() - self._checked_mono > CHAIN_STATE_MAX_AGE_S
            if fresh or stale or self._report is None:
                self._report = audit.verify(session)
                self._checked_at, self._checked_mono = datetime.now(UTC), time.monotonic()
            return self._report, self._checked_at


def chain_state(request: Request, session: Session, *, fresh: bool = False) -> tuple[audit.ChainReport, datetime]:
    state = getattr(request.app.state, "audit_chain_state", None)
    if state is None:
        state = request.app.state.audit_chain_state = ChainState()
    return state.get(session, fresh=fresh)


def event_json(event: AuditEvent) -> dict[str, Any]:
    return {"seq": event.seq, "at": event.at.isoformat(), "username": event.username, "action": event.action,
            "target": event.target, "detail": event.detail}


@router.get("/api/audit", summary="Audit events, newest first, filtered by user, action and date (admin)",
            responses={422: {"description": "a filter that is not a date, named in `detail`"}})
def events(_admin: Admin, session: DbSession,
           filters: Annotated[AuditFilters, audit_filters]) -> list[dict[str, Any]]:
    return [event_json(e) for e in audit.search(session, **filters.query(), limit=filters.limit)]


@router.get("/api/audit/verify", summary="Check the audit chain: intact, or the first row deleted, inserted or "
                                         "edited (admin)")
def verify(_admin: Admin, session: DbSession) -> dict[str, Any]:
    return audit.verify(session).to_json()


@router.get("/api/audit.csv", summary="The filtered audit events as CSV, oldest first, with their chain (admin)",
            response_class=Response, responses={200: {"content": {"text/csv": {}}},
                                                422: {"description": "a filter that is not a date"}})
def events_csv(admin: Admin, session: DbSession, filters: Annotated[AuditFilters, audit_filters]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for event in audit.iter_events(session, **filters.query()):
        writer.writerow([event.seq, event.at.isoformat(), event.username or "", event.action, event.target,
                         event.detail, event.prev_hmac, event.hmac or ""])
        rows += 1
    audit.append(session, username=admin.username, action="audit.export", detail=f"{rows} rows")
    return Response(buffer.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="spineseg-audit.csv"'})
