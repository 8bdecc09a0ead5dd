"""FastAPI dependencies, injected through ``Annotated`` aliases: ``DbSession``, ``Services``,
``CurrentUser`` and the role gates ``Uploader``, ``Researcher``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from spineseg.config import Settings
from spineseg.jobs.queue import JobQueue
from spineseg.registry import Registry
from spineseg.store.database import Database
from spineseg.web.auth import (
    CSRF_HEADER,
    SAFE_METHODS,
    Forbidden,
    NotAuthenticated,
    Principal,
    csrf_matches,
    principal_from_request,
)


@dataclass
class AppServices:
    """What the routes need, built once at start-up and kept on ``app.state.services``."""

    settings: Settings
    database: Database
    registry: Registry
    queue: JobQueue


def get_services(request: Request) -> AppServices:
    return request.app.state.services


Services = Annotated[AppServices, Depends(get_services)]


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


async def get_principal(request: Request, session: DbSession) -> Principal:
    """The authenticated caller; cookie-authenticated unsafe requests must pass the CSRF check."""
    principal = principal_from_request(request, session)
    if principal is None:
        raise NotAuthenticated
    if principal.via == "session" and request.method not in SAFE_METHODS:
        supplied = request.headers.get(CSRF_HEADER) or await _csrf_field(request)
        if not csrf_matches(request, supplied):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


def _gate(permission: str, what: str) -> Callable[[Principal], Principal]:
    def check(principal: CurrentUser) -> Principal:
        if not principal.may(permission):
            raise Forbidden(f"role {principal.role!r} may not {what}")
        return principal

    return check


Uploader = Annotated[Principal, Depends(_gate("upload", "upload, segment, cancel or delete studies"))]
Researcher = Annotated[Principal, Depends(_gate("evaluate", "run evaluations"))]
Admin = Annotated[Principal, Depends(_gate("admin", "administer users"))]
