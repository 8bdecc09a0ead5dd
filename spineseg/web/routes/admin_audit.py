"""The audit trail for admins: filtered events (JSON, CSV) and the chain's state."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from spineseg.errors import InputError
from spineseg.store import audit
from spineseg.store.models import AuditEvent
from spineseg.web.deps import Admin, DbSession

router = APIRouter(tags=["admin"])

MAX_LIMIT = 1000
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
