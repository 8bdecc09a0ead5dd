"""Who is asking and what they may do.

A request is authenticated by ``Authorization: Bearer <personal token>`` (scripts) or by the
signed session cookie set at login (browsers). Cookie-authenticated requests that change
something must carry the session's CSRF token, as the ``csrf_token`` form field or the
``X-CSRF-Token`` header; token-authenticated requests need none (a browser never sends a
bearer token on its own).

Roles and what they allow:

==========  ==================================================
viewer      see studies, results and downloads
clinician   + upload, segment, cancel and delete studies
researcher  + evaluation across studies
admin       + user administration
==========  ==================================================
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request

from spineseg.store.accounts import get_user_by_id, token_row, token_use_is_stale
from spineseg.store.models import User

SESSION_USER = "user_id"
SESSION_CSRF = "csrf"
SESSION_CREDENTIAL = "cred"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset({"viewer", "clinician", "researcher", "admin"}),
    "upload": frozenset({"clinician", "researcher", "admin"}),
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

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def csrf_matches(request: Request, supplied: str | None) -> bool:
    expected = request.session.get(SESSION_CSRF)
    return bool(expected and supplied and hmac.compare_digest(expected, supplied))


def credential_fingerprint(user: User) -> str:
    """Changes whenever the password does, so a password change ends every other session."""
    return hashlib.sha256(user.password_hash.encode("utf-8")).hexdigest()[:16]


def log_in(request: Request, user: User) -> None:
    """Start a fresh session for ``user`` (old session data dropped: no fixation)."""
    request.session.clear()
    request.session[SESSION_USER] = user.id
    request.session[SESSION_CREDENTIAL] = credential_fingerprint(user)
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def log_out(request: Request) -> None:
    request.session.clear()


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass(frozen=True)
class Resolved:
    """The caller (``None``: no valid credentials) and, for a token whose last use is older
    than the recorded resolution, its id, so the caller can note the use after the lookup."""

    principal: Principal | None
    stale_token_id: int | None = None


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
    user_id = request.session.get(SESSION_USER)
    if not isinstance(user_id, int):
        return Resolved(None)
    user = get_user_by_id(session, user_id=user_id)
    if user is None or request.session.get(SESSION_CREDENTIAL) != credential_fingerprint(user):
        return Resolved(None)
    return Resolved(Principal(user.id, user.username, user.role, "session"))


def principal_from_request(request: Request, session: Session) -> Principal | None:
    """The caller, or ``None`` when the request carries no valid credentials (reads only)."""
    return resolve_credentials(request, session).principal
