"""Users (argon2id password hashes) and personal API tokens (stored as SHA-256, with a name and
an expiry). ``record`` appends to the audit trail, which lives in ``spineseg.store.audit``."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, DateTime, String, delete, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.names import check_typed_name
from spineseg.store import audit
from spineseg.store.models import MIN_PASSWORD_LENGTH, ROLES, ApiToken, AuditEvent, Study, Upload, User
from spineseg.store.web_sessions import end_user_sessions

TOKEN_PREFIX = "sst_"
# last_used_at of a token is kept to this resolution: a read never waits on a write.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)
DEFAULT_TOKEN_DAYS = 90  # a token's lifetime unless its creator chooses another
MAX_TOKEN_DAYS = 3650
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")

_hasher = PasswordHasher()  # argon2id with the library's current recommended cost
# A hash to verify against when the user does not exist, so a wrong username costs as long as
# a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_username(username: str) -> str:
    if not (1 <= len(username) <= 64) or not set(username) <= USERNAME_CHARS:
        raise InputError("username", f"{username!r} must be 1-64 letters, digits or . _ - @")
    return username


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    """A new active user; ``InputError`` for a taken name, unknown role or short password."""
    _check_username(username)
    if role not in ROLES:
        raise InputError("role", f"{role!r} is not a role; choose one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if get_user(session, username=username) is not None:
        raise InputError("username", f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    session.flush()
    return user


def any_user_exists(session: Session) -> bool:
    """Whether at least one account (active or not) exists."""
    return bool(session.scalar(select(func.count()).select_from(User)))


def create_first_admin(session: Session, *, username: str, password: str) -> User | None:
    """The first account, an admin, or ``None`` when any user exists already. One guarded
    ``INSERT ... SELECT ... WHERE NOT EXISTS``: of two concurrent calls, one inserts."""
    _check_username(username)
    _check_password(password)
    columns = {"username": literal(username, String()), "password_hash": literal(hash_password(password), String()),
               "role": literal("admin", String()), "active": literal(True, Boolean()),
               "created_at": literal(datetime.now(UTC), DateTime(timezone=True))}
    guarded = select(*columns.values()).where(~exists(select(User.id)))
    if not session.execute(insert(User).from_select(list(columns), guarded)).rowcount:
        return None
    return get_user(session, username=username)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")


def check_new_credentials(username: str, password: str) -> None:
    """``InputError`` naming the field when ``username`` or ``password`` breaks the rules."""
    _check_username(username)
    _check_password(password)


def get_user(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user_by_id(session: Session, *, user_id: int) -> User | None:
    user = session.get(User, user_id)
    return user if user is not None and user.active else None


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    """The active user with this name and password, else ``None`` (same cost either way)."""
    user = get_user(session, username=username)
    if user is None or not user.active:
        password_matches(_DUMMY_HASH, password)
        return None
    if not password_matches(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, *, username: str, name: str = "",
                 days: int | None = DEFAULT_TOKEN_DAYS) -> tuple[ApiToken, str]:
    """A new token for ``username`` valid for ``days`` (``None``: no expiry); returns the row and
    the secret (shown once, never stored)."""
    user = get_user(session, username=username)
    if user is None:
        raise InputError("username", f"no user named {username!r}")
    if days is not None and not (1 <= days <= MAX_TOKEN_DAYS):
        raise InputError("days", f"{days!r} must be 1-{MAX_TOKEN_DAYS} days")
    check_typed_name(name, "name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = None if days is None else datetime.now(UTC) + timedelta(days=days)
    row = ApiToken(user_id=user.id, token_sha256=_token_digest(secret), prefix=secret[:10], name=name[:100],
                   expires_at=expires)
    session.add(row)
    session.flush()
    return row, secret


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def token_is_expired(row: ApiToken, now: datetime | None = None) -> bool:
    return row.expires_at is not None and _aware(row.expires_at) <= (now or datetime.now(UTC))


def token_row(session: Session, *, token: str) -> ApiToken | None:
    """The unrevoked, unexpired token row of an active user for the secret ``token``, else
    ``None``: one indexed read joined with the user. Reads only: a request authenticated by a
    token writes nothing (see ``note_token_use``)."""
    found = session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                            .where(ApiToken.token_sha256 == _token_digest(token))).first()
    if found is None:
        return None
    row, user = found
    if row.revoked or not user.active or token_is_expired(row):
        return None
    return row


def list_tokens(session: Session, *, username: str | None = None) -> list[ApiToken]:
    """Tokens (revoked and expired ones too), newest first; only ``username``'s when given."""
    query = select(ApiToken).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    if username:
        query = query.where(User.username == username)
    return list(session.scalars(query))


def revoke_token(session: Session, *, token_id: int) -> ApiToken:
    """Revoke token ``token_id`` (it stops working at once); ``InputError`` when there is none."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise InputError("token", f"no token with id {token_id!r}")
    row.revoked = True
    session.flush()
    return row


def user_for_token(session: Session, *, token: str) -> User | None:
    """The active owner of an unrevoked token, else ``None``."""
    row = token_row(session, token=token)
    return None if row is None else row.user


def token_use_is_stale(row: ApiToken, now: datetime | None = None) -> bool:
    """Whether ``row.last_used_at`` is older than ``TOKEN_USE_RESOLUTION`` (or unset)."""
    if row.last_used_at is None:
        return True
    last = row.last_used_at if row.last_used_at.tzinfo else row.last_used_at.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - last >= TOKEN_USE_RESOLUTION


def note_token_use(session: Session, *, token_id: int, now: datetime | None = None) -> bool:
    """Record that token ``token_id`` was used, at most once per ``TOKEN_USE_RESOLUTION``: one
    guarded UPDATE, so many clients polling with tokens cost one write a minute each, not one
    write per request. Returns whether a row was written."""
    now = now or datetime.now(UTC)
    cutoff = now - TOKEN_USE_RESOLUTION
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= cutoff))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def record(session: Session, *, username: str | None, action: str, target: str = "", detail: str = "") -> None:
    """Append one audit event (committed with the caller's session): ``audit.append``."""
    audit.append(session, username=username, action=action, target=target, detail=detail)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def update_user(session: Session, *, username: str, role: str | None = None, active: bool | None = None,
                password: str | None = None) -> User:
    """Change a user's role, active flag or password; ``InputError`` naming what is wrong."""
    user = get_user(session, username=username)
    if user is None:
        raise InputError("username", f"no user named {username!r}")
    if role is not None:
        if role not in ROLES:
            raise InputError("role", f"{role!r} is not a role; choose one of {', '.join(ROLES)}")
        user.role = role
    if active is not None:
        user.active = active
    if password is not None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InputError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        user.password_hash = hash_password(password)
    if password is not None or active is False:  # a new password or a disabled user: sessions end now
        session.flush()
        end_user_sessions(session, user_id=user.id)
    return user


def deletion_effects(session: Session) -> dict[int, dict[str, int]]:
    """What deleting each user would touch, by user id: ``studies`` they own (kept, owner
    removed), ``tokens`` (every one deleted; ``active_tokens`` of them still usable) and
    ``uploads`` (unfinished resumable uploads, discarded). Users with none are absent."""
    effects: dict[int, dict[str, int]] = {}

    def add(key: str, rows: Any) -> None:
        for user_id, count in rows:
            if user_id is not None:
                effects.setdefault(user_id, {"studies": 0, "tokens": 0, "active_tokens": 0, "uploads": 0})[key] = count

    add("studies", session.execute(select(Study.owner_id, func.count()).group_by(Study.owner_id)))
    add("tokens", session.execute(select(ApiToken.user_id, func.count()).group_by(ApiToken.user_id)))
    active: dict[int, int] = {}
    for row in session.scalars(select(ApiToken).where(ApiToken.revoked.is_(False))):
        if not token_is_expired(row):
            active[row.user_id] = active.get(row.user_id, 0) + 1
    add("active_tokens", active.items())
    add("uploads", session.execute(select(Upload.owner_id, func.count()).where(Upload.status != "done")
                                   .group_by(Upload.owner_id)))
    return effects


def delete_user(session: Session, *, username: str) -> None:
    """Delete ``username`` with their tokens, sessions and unfinished uploads; their studies stay
    (owner ``NULL``: shown as a deleted user). ``InputError`` when there is no such user."""
    user = get_user(session, username=username)
    if user is None:
        raise InputError("username", f"no user named {username!r}")
    user_id = user.id
    session.expunge(user)
    end_user_sessions(session, user_id=user_id)
    session.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
    session.execute(delete(User).where(User.id == user_id))


def recent_events(session: Session, *, limit: int = 200) -> list[AuditEvent]:
    return audit.search(session, limit=limit)
