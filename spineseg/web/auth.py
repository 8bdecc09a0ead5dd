"""Who is asking and what they may do.

A request is authenticated by ``Authorization: Bearer <personal token>`` (scripts) or by the
signed session cookie set at login (browsers). The cookie carries only a random session id;
the session itself is a row (``spineseg.store.web_sessions``), so logging out, a new password
or a disabled user ends it at once. Cookie-authenticated requests that change something must
carry the session's CSRF token (kept in that row), as the ``csrf_token`` form field or the
``X-CSRF-Token`` header; token-authenticated requests need none (a browser never sends a
bearer token on its own). Before login the cookie holds only a CSRF nonce for the login form.

Roles and what they allow:

==========  ==================================================
viewer      see studies, results and downloads
clinician   + upload, segment, cancel and delete studies; correct a study's labels
researcher  + evaluation across studies
admin       + user administration
==========  ==================================================
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session
from starlette.requests import Request

from spineseg.store.accounts import token_row, token_use_is_stale
from spineseg.store.models import User
from spineseg.store.web_sessions import end_session, find_session, purge_expired, seen_is_stale, start_session

SESSION_ID = "sid"
SESSION_CSRF = "csrf"  # before login only: the login form's nonce
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset({"viewer", "clinician", "researcher", "admin"}),
    "upload": frozenset({"clinician", "researcher", "admin"}),
    "correct": frozenset({"clinician", "researcher", "admin"}),  # save a correction of a study's labels
    "evaluate": frozenset({"researcher", "admin"}),
    "admin": frozenset({"admin"}),
}


class NotAuthenticated(Exception):
    """No valid credentials came with the request."""


class Forbidden(Exception):
    """Authenticated, but the role does not allow the action (or the CSRF token is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    """The authenticated user and how they authenticated (``token`` or ``session``)."""

    user_id: int
    username: str
    role: str
    via: str
    csrf: str = ""  # the session's CSRF token (cookie sessions only)

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


def csrf_token(request: Request) -> str:
    """The CSRF token of the logged-in session (from its row), else the login form's nonce,
    created on first use."""
    token = getattr(request.state, "csrf", None)
    if token:
        return token
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def csrf_matches(request: Request, supplied: str | None) -> bool:
    expected = getattr(request.state, "csrf", None) or request.session.get(SESSION_CSRF)
    return bool(expected and supplied and hmac.compare_digest(expected, supplied))


def _client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def log_in(request: Request, user: User, session: Session | None = None) -> None:
    """Start a fresh server-side session for ``user``: a new id in the cookie, nothing else
    (old cookie data dropped: no fixation). Written in ``session``, or in one of its own."""
    services = request.app.state.services
    lifetime = timedelta(hours=services.settings.session_hours)

    def start(db: Session) -> tuple[str, str]:
        purge_expired(db)  # one indexed DELETE per login keeps the table to live sessions
        return start_session(db, user_id=user.id, lifetime=lifetime, address=_client_address(request))

    if session is not None:
        session_id, csrf = start(session)
    else:
        with services.database.session() as own:
            session_id, csrf = start(own)
    request.session.clear()
    request.session[SESSION_ID] = session_id
    request.state.csrf = csrf


def log_out(request: Request, session: Session | None = None) -> None:
    """End the session (its row is deleted: the old cookie no longer authenticates)."""
    session_id = request.session.get(SESSION_ID)
    request.session.clear()
    request.state.csrf = None
    if not isinstance(session_id, str):
        return
    if session is not None:
        end_session(session, session_id=session_id)
    else:
        with request.app.state.services.database.session() as own:
            end_session(own, session_id=session_id)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass(frozen=True)
class Resolved:
    """The caller (``None``: no valid credentials) and, for a token or session whose last use is
    older than the recorded resolution, its key, so the caller can note the use after the lookup."""

    principal: Principal | None
    stale_token_id: int | None = None
    stale_session: str | None = None  # WebSession.id_sha256


def resolve_credentials(request: Request, session: Session) -> Resolved:
    """Who sent ``request``; reads only. A bearer header that does not match a token is an
    explicit failure, not a fallback to the cookie."""
    token = bearer_token(request)
    if token is not None:
        row = token_row(session, token=token)
        if row is None:
            return Resolved(None)
        user = row.user
        return Resolved(Principal(user.id, user.username, user.role, "token"),
                        row.id if token_use_is_stale(row) else None)
    session_id = request.session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return Resolved(None)
    found = find_session(session, session_id=session_id)
    if found is None:
        return Resolved(None)
    web_session, user = found
    return Resolved(Principal(user.id, user.username, user.role, "session", web_session.csrf),
                    stale_session=web_session.id_sha256 if seen_is_stale(web_session) else None)


def principal_from_request(request: Request, session: Session) -> Principal | None:
    """The caller, or ``None`` when the request carries no valid credentials (reads only)."""
    return resolve_credentials(request, session).principal
