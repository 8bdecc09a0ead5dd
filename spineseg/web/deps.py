"""FastAPI dependencies, injected through ``Annotated`` aliases: ``DbSession``, ``Services``,
``CurrentUser`` and the role gates ``Uploader``, ``Researcher``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from spineseg.config import Settings
from spineseg.jobs.queue import JobQueue
from spineseg.registry import Registry
from spineseg.services.disk_room import DiskRoom
from spineseg.services.health import HealthMonitor
from spineseg.store.accounts import note_token_use
from spineseg.store.database import Database
from spineseg.store.web_sessions import note_session_seen
from spineseg.web.auth import (
    CSRF_HEADER,
    SAFE_METHODS,
    Forbidden,
    NotAuthenticated,
    Principal,
    csrf_matches,
    resolve_credentials,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class AppServices:
    """What the routes need, built once at start-up and kept on ``app.state.services``."""

    settings: Settings
    database: Database
    registry: Registry
    queue: JobQueue
    health: HealthMonitor | None = None  # set when the app starts
    disk: DiskRoom | None = None  # the free disk against SPINESEG_DISK_RESERVE_MB (issue 30.4)

    def disk_room(self) -> DiskRoom:
        if self.disk is None:
            self.disk = DiskRoom(self.settings.data_dir, self.settings.disk_reserve_bytes,
                                 room_bytes=self.settings.disk_room_bytes)
        return self.disk

    def production_changed(self) -> None:
        """Re-run the health checks now: the production model is part of them."""
        if self.health is not None:
            self.health.check_now()


def get_services(request: Request) -> AppServices:
    return request.app.state.services


Services = Annotated[AppServices, Depends(get_services)]



async def run_in_session(services: AppServices, work: Callable[[Session], T]) -> T:
    """``work(session)`` in a session of its own (committed on success) on a worker thread: for
    async routes, which must never wait on the database on the event loop."""
    def in_session() -> T:
        with services.database.session() as session:
            return work(session)

    return await run_in_threadpool(in_session)


def get_db_session(services: Services) -> Iterator[Session]:
    with services.database.session() as session:
        yield session


# scope="function": the session commits when the route returns, before the response is sent,
# so a client following a redirect (or polling) never reads the state from before its own change.
DbSession = Annotated[Session, Depends(get_db_session, scope="function")]


async def _csrf_field(request: Request) -> str | None:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


def _lookup_principal(request: Request, database: Database) -> Principal | None:
    """Resolve the caller in a session of its own, closed before the route runs: a route that
    streams a large upload or waits on a job holds no database connection meanwhile."""
    with database.session() as session:
        resolved = resolve_credentials(request, session)
    if resolved.stale_token_id is not None or resolved.stale_session is not None:
        try:
            with database.session() as session:
                if resolved.stale_token_id is not None:
                    note_token_use(session, token_id=resolved.stale_token_id)
                if resolved.stale_session is not None:
                    note_session_seen(session, id_sha256=resolved.stale_session)
        except OperationalError as exc:  # a busy database: the use is noted on a later request
            log.debug("token or session use not recorded this time: %s", exc)
    return resolved.principal


async def get_principal(request: Request, services: Services) -> Principal:
    """The authenticated caller; cookie-authenticated unsafe requests must pass the CSRF check.
    The lookup runs on a worker thread: the event loop never waits on the database."""
    principal = await run_in_threadpool(_lookup_principal, request, services.database)
    if principal is None:
        raise NotAuthenticated
    request.state.principal = principal  # error pages show the navigation of whoever this is
    if principal.via == "session":
        request.state.csrf = principal.csrf  # the session's token, for forms and the check below
    if principal.via == "session" and request.method not in SAFE_METHODS:
        supplied = request.headers.get(CSRF_HEADER) or await _csrf_field(request)
        if not csrf_matches(request, supplied):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require_disk_room(services: Services, _user: CurrentUser) -> None:
    """507 with the reason when the free disk is below the reserve (``services.disk_room``):
    on every route that stores data, once the caller is known and before a byte of the body is read."""
    services.disk_room().require()


def disk_for_deletion(services: Services) -> Iterator[None]:
    """A route that frees space: measure first (which gives up the room kept for deletions
    when the disk is full, so the database can record them), and again after it."""
    disk = services.disk_room()
    disk.forget()
    disk.room()
    try:
        yield
    finally:
        disk.forget()


NeedsDiskRoom = Depends(require_disk_room)
FreesDisk = Depends(disk_for_deletion)


def _gate(permission: str, what: str) -> Callable[[Principal], Principal]:
    def check(principal: CurrentUser) -> Principal:
        if not principal.may(permission):
            raise Forbidden(f"role {principal.role!r} may not {what}")
        return principal

    return check


Uploader = Annotated[Principal, Depends(_gate("upload", "upload, segment, cancel or delete studies"))]
Researcher = Annotated[Principal, Depends(_gate("evaluate", "run evaluations"))]
Corrector = Annotated[Principal, Depends(_gate("correct", "correct a study's labels"))]
Admin = Annotated[Principal, Depends(_gate("admin", "administer users"))]
