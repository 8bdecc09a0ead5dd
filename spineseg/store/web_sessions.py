"""Server-side login sessions: the browser's signed cookie carries only a random session id;
the table keeps its SHA-256 (a copy of the database holds no usable session), the user, the
session's CSRF token and when it ends. Logging out, changing a password and disabling or
deleting a user delete the rows, which ends those sessions at once.

Looking a session up is one primary-key read joined with its user; ``last_seen_at`` is
written at most once per ``SEEN_RESOLUTION`` by one guarded UPDATE (as token use is).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from spineseg.store.models import Base, User, utc_now

SEEN_RESOLUTION = timedelta(minutes=1)


class WebSession(Base):
    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    address: Mapped[str] = mapped_column(String(64), default="", server_default="")


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def start_session(session: Session, *, user_id: int, lifetime: timedelta, address: str = "") -> tuple[str, str]:
    """A new session for ``user_id``; returns ``(session id for the cookie, CSRF token)``."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.add(WebSession(id_sha256=_digest(session_id), user_id=user_id, csrf=csrf, created_at=now,
                           expires_at=now + lifetime, last_seen_at=now, address=address[:64]))
    session.flush()
    return session_id, csrf


def find_session(session: Session, *, session_id: str, now: datetime | None = None) -> tuple[WebSession, User] | None:
    """The live session with this id and its active user (one indexed read), else ``None``."""
    row = session.execute(select(WebSession, User).join(User, User.id == WebSession.user_id)
                          .where(WebSession.id_sha256 == _digest(session_id))).first()
    if row is None:
        return None
    web_session, user = row
    if not user.active or _aware(web_session.expires_at) <= (now or datetime.now(UTC)):
        return None
    return web_session, user


def seen_is_stale(web_session: WebSession, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) - _aware(web_session.last_seen_at) >= SEEN_RESOLUTION


def note_session_seen(session: Session, *, id_sha256: str, now: datetime | None = None) -> bool:
    """``last_seen_at = now`` unless it was written within ``SEEN_RESOLUTION`` (one guarded UPDATE)."""
    now = now or datetime.now(UTC)
    result = session.execute(
        update(WebSession)
        .where(WebSession.id_sha256 == id_sha256, WebSession.last_seen_at <= now - SEEN_RESOLUTION)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)


def end_session(session: Session, *, session_id: str) -> bool:
    """Delete the session with this id; whether one existed."""
    return bool(session.execute(delete(WebSession).where(WebSession.id_sha256 == _digest(session_id))).rowcount)


def end_user_sessions(session: Session, *, user_id: int) -> int:
    """Delete every session of ``user_id``; how many there were."""
    return int(session.execute(delete(WebSession).where(WebSession.user_id == user_id)).rowcount or 0)


def purge_expired(session: Session, *, now: datetime | None = None) -> int:
    """Delete sessions past their end (they no longer authenticate anyway)."""
    cutoff = now or datetime.now(UTC)
    return int(session.execute(delete(WebSession).where(WebSession.expires_at <= cutoff)).rowcount or 0)


def sessions_of(session: Session, *, user_id: int) -> list[WebSession]:
    return list(session.scalars(select(WebSession).where(WebSession.user_id == user_id)
                                .order_by(WebSession.created_at.desc())))
