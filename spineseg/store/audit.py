"""The audit trail: one append-only table whose rows form a hash chain keyed with the server's
secret, so a row deleted, inserted or edited behind the service's back is detected.

Every row has a sequence number ``seq`` (1, 2, 3 ...), ``prev_hmac`` (the ``hmac`` of row
``seq - 1``, ``""`` for the first) and ``hmac = HMAC-SHA256(K, seq | prev_hmac | content)``,
where ``K`` is derived from ``Settings.session_secret()`` and content is the time, user,
action, target and detail. Someone who can write the database but does not know the secret
can neither forge a row nor re-link the chain around a removed one.

Appends are serialised by the database: on SQLite one ``INSERT ... SELECT`` reads the newest
row and writes the next under the write lock it takes (the HMAC is computed by a function
registered on the connection), so two writers can never chain onto the same row; on
PostgreSQL a transaction-scoped advisory lock does the same. ``seq`` is also unique. The row
is part of the caller's transaction: an action that rolls back leaves no audit row.

Cutting rows off the *end* of the chain leaves a valid, shorter chain. So every commit that
wrote audit rows also appends the new head (``seq:hmac``) to a file outside the database
(``HEAD_LOG_NAME`` in the data folder, appended only), and ``verify`` checks by default that the
highest head noted there is still in the chain. ``expected_head`` (``spineseg audit verify
--expect-head SEQ:HMAC``) checks a head noted anywhere else. Someone who can rewrite both the
database and the data folder can still cut the end; a head copied off the machine catches that.
Rows written before the chain existed (migration 0004) have no ``seq``; they are counted as
"before the chain", and any unchained row after the first chained one is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, LargeBinary, String, bindparam, event, func, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from spineseg.store.models import AuditEvent

log = logging.getLogger(__name__)

HMAC_FUNCTION = "spineseg_audit_hmac"
_KEY_LABEL = b"spineseg audit chain v1"
_PG_LOCK_ID = 0x5E1A0D17  # pg_advisory_xact_lock key that serialises appends
_keys: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()
_head_logs: weakref.WeakKeyDictionary[Engine, Path] = weakref.WeakKeyDictionary()
HEAD_LOG_NAME = "audit-heads.log"
WRITTEN = "spineseg_audit_written"  # session.info: the (seq, hmac) this transaction wrote last
_HEAD_TAIL_BYTES = 64 * 1024  # how much of the head log's end verify reads
_keys_lock = threading.Lock()

_SQLITE_APPEND = text(f"""
INSERT INTO audit_events (at, username, action, target, detail, seq, prev_hmac, hmac)
SELECT :at, :username, :action, :target, :detail, COALESCE(p.seq, 0) + 1, COALESCE(p.hmac, ''),
       {HMAC_FUNCTION}(:key, COALESCE(p.seq, 0) + 1, COALESCE(p.hmac, ''), :body)
FROM (SELECT 1) AS one
LEFT JOIN (SELECT seq, hmac FROM audit_events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1) AS p ON 1 = 1
RETURNING seq, hmac
""").bindparams(bindparam("at", type_=DateTime(timezone=True)), bindparam("key", type_=LargeBinary()),
                bindparam("username", type_=String()))


def chain_key(secret: str) -> bytes:
    """The HMAC key of the chain, derived from the server's secret (never the secret itself)."""
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def use_key(engine_or_database: Any, secret: str, *, head_log: Path | None = None) -> None:
    """Chain rows written through ``engine_or_database`` with ``secret`` (``session_secret()``);
    ``head_log``: the file each commit's new head is appended to (``data_dir / HEAD_LOG_NAME``)."""
    engine = getattr(engine_or_database, "engine", engine_or_database)
    with _keys_lock:
        _keys[engine] = chain_key(secret)
        if head_log is not None:
            _head_logs[engine] = Path(head_log)


def _engine_of(session: Session) -> Engine:
    engine = session.get_bind()
    return getattr(engine, "engine", engine)


def _key_for(session: Session) -> bytes:
    engine = _engine_of(session)
    with _keys_lock:
        key = _keys.get(engine)
    if key is None:  # a caller that did not configure one (the CLI): the service's key, and its
        from spineseg.config import Settings  # head log when this is the service's own database

        settings = Settings.from_env()
        key = chain_key(settings.session_secret())
        with _keys_lock:
            _keys[engine] = key
            if make_url(settings.sqlalchemy_url) == engine.url:
                _head_logs.setdefault(engine, settings.data_dir / HEAD_LOG_NAME)
    return key


def _at_text(at: datetime) -> str:
    """The time as stored: naive UTC to the microsecond (SQLite keeps no zone)."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(sep=" ", timespec="microseconds")


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _body(at: datetime, username: str | None, action: str, target: str, detail: str) -> str:
    return _encode([_at_text(at), username, action, target, detail])


def row_hmac(key: bytes, seq: int, prev_hmac: str, body: str) -> str:
    message = f"{seq}\n{prev_hmac}\n{body}".encode()
    return hmac.digest(key, message, "sha256").hex()


def _sqlite_hmac(key: bytes, seq: int, prev_hmac: str, body: str) -> str:
    return row_hmac(bytes(key), int(seq), prev_hmac, body)


PENDING = "spineseg_audit_pending"


def append(session: Session, *, username: str | None, action: str, target: str = "", detail: str = "") -> None:
    """Append one event to the chain in the caller's transaction: the row is written when the
    session commits (or flushes the events, ``write_pending``), as part of that commit.

    Deferred on purpose: an audited read would otherwise take SQLite's write lock at the end of
    the route and hold it until the session commits on another worker thread, and under load a
    request can wait long for that thread: every other writer then waited on the lock until its
    busy timeout ran out ("database is locked")."""
    at = datetime.now(UTC)
    values = {"username": None if username is None else username[:64], "action": action[:32],
              "target": target[:255], "detail": detail}
    session.info.setdefault(PENDING, []).append((at, values))


def write_pending(session: Session) -> None:
    """Write the events ``append`` queued on ``session`` (called before every commit)."""
    pending = session.info.pop(PENDING, [])
    for at, values in pending:
        _write(session, at, values)


@event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    if session.info.get(PENDING):
        write_pending(session)


@event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)  # the action did not happen: neither did its record
    session.info.pop(WRITTEN, None)


@event.listens_for(Session, "after_commit")
def _note_head(session: Session) -> None:
    """Append the head this commit made to the head log, outside the database."""
    written = session.info.pop(WRITTEN, None)
    if written is None:
        return
    with _keys_lock:
        path = _head_logs.get(_engine_of(session))
    if path is None:
        return
    try:
        with open(path, "a", encoding="ascii") as stream:  # one short write: whole lines under O_APPEND
            stream.write(f"{written[0]}:{written[1]}\n")
    except OSError as error:  # the action is committed: say so, never fail it now
        log.warning("audit head %s not noted in %s: %s", written[0], path, error.strerror or error)


def noted_head(path: Path | None) -> tuple[int, str] | None:
    """The highest ``(seq, hmac)`` in the head log's last lines; ``None`` when there is none."""
    if path is None:
        return None
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - _HEAD_TAIL_BYTES))
            tail = stream.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    best: tuple[int, str] | None = None
    for line in tail.splitlines():
        seq, _, mac = line.strip().partition(":")
        if seq.isdigit() and len(mac) == 64 and (best is None or int(seq) > best[0]):
            best = (int(seq), mac)
    return best


def head_log_of(session: Session) -> Path | None:
    """The head log this session's database notes its heads in, if one is configured."""
    _key_for(session)
    with _keys_lock:
        return _head_logs.get(_engine_of(session))


def _write(session: Session, at: datetime, values: dict[str, Any]) -> None:
    body = _body(at, **values)
    key = _key_for(session)
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.connection.driver_connection.create_function(HMAC_FUNCTION, 4, _sqlite_hmac, deterministic=True)
        written = session.execute(_SQLITE_APPEND, {"at": at, "key": key, "body": body, **values}).one()
        session.info[WRITTEN] = (int(written.seq), written.hmac)
        return
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _PG_LOCK_ID})
    head = session.execute(select(AuditEvent.seq, AuditEvent.hmac).where(AuditEvent.seq.is_not(None))
                           .order_by(AuditEvent.seq.desc()).limit(1)).first()
    seq, prev = (head.seq + 1, head.hmac or "") if head else (1, "")
    mac = row_hmac(key, seq, prev, body)
    session.add(AuditEvent(at=at, seq=seq, prev_hmac=prev, hmac=mac, **values))
    session.flush()
    session.info[WRITTEN] = (seq, mac)


@dataclass
class ChainReport:
    """What ``verify`` found. ``problems``: ``(row id, seq or None, what is wrong)``, first first."""

    rows: int = 0
    before_chain: int = 0
    head_seq: int = 0
    head_hmac: str = ""
    problems: list[tuple[int, int | None, str]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def first_problem(self) -> str:
        if not self.problems:
            return ""
        row_id, seq, what = self.problems[0]
        return f"row id {row_id}" + (f" (seq {seq})" if seq is not None else "") + f": {what}"

    def to_json(self) -> dict[str, Any]:
        return {"intact": self.intact, "rows": self.rows, "before_chain": self.before_chain,
                "head_seq": self.head_seq, "head_hmac": self.head_hmac, "first_problem": self.first_problem() or None,
                "problems": [{"id": i, "seq": s, "problem": w} for i, s, w in self.problems[:100]]}


def verify(session: Session, *, expected_head: tuple[int, str] | None = None, max_problems: int = 100) -> ChainReport:
    """Walk the chain in ``seq`` order and report every row that is missing, out of place,
    edited or forged. ``expected_head``: a ``(seq, hmac)`` noted earlier that must still be there;
    by default the highest head in the head log (``noted_head``), when there is one."""
    write_pending(session)
    key = _key_for(session)
    if expected_head is None:
        expected_head = noted_head(head_log_of(session))
    report = ChainReport()
    expected_seq, prev = 1, ""
    first_chained_id: int | None = None
    columns = (AuditEvent.id, AuditEvent.seq, AuditEvent.at, AuditEvent.username, AuditEvent.action,
               AuditEvent.target, AuditEvent.detail, AuditEvent.prev_hmac, AuditEvent.hmac)
    anchor_seen = expected_head is None
    rows = session.execute(select(*columns).where(AuditEvent.seq.is_not(None)).order_by(AuditEvent.seq)
                           .execution_options(yield_per=5000))
    for row in rows:
        report.rows += 1
        first_chained_id = row.id if first_chained_id is None else first_chained_id
        if row.seq != expected_seq:
            gap = (f"seq {expected_seq} missing" if row.seq == expected_seq + 1
                   else f"seq {expected_seq}..{row.seq - 1} missing") if row.seq > expected_seq else "seq out of order"
            report.problems.append((row.id, row.seq, f"{gap}: rows before it were deleted"))
        elif (row.prev_hmac or "") != prev:
            report.problems.append((row.id, row.seq, "does not link to the row before it (a row was replaced)"))
        body = _body(row.at, row.username, row.action, row.target or "", row.detail or "")
        if not hmac.compare_digest(row.hmac or "", row_hmac(key, row.seq, row.prev_hmac or "", body)):
            report.problems.append((row.id, row.seq, "content does not match its HMAC (edited or forged)"))
        if expected_head is not None and row.seq == expected_head[0]:
            anchor_seen = True
            if row.hmac != expected_head[1]:
                report.problems.append((row.id, row.seq, "is not the row noted as the head earlier"))
        expected_seq, prev = row.seq + 1, row.hmac or ""
        report.head_seq, report.head_hmac = row.seq, row.hmac or ""
        if len(report.problems) >= max_problems:
            break
    if not anchor_seen:
        report.problems.append((0, expected_head[0], "the head noted earlier is gone: rows were cut off the end "
                                                    "(or the database was restored from an older copy)"))
    unchained = select(AuditEvent.id).where(AuditEvent.seq.is_(None)).order_by(AuditEvent.id)
    for (row_id,) in session.execute(unchained):
        if first_chained_id is None or row_id < first_chained_id:
            report.before_chain += 1
        else:
            report.problems.append((row_id, None, "is not in the chain (inserted directly in the database)"))
    report.problems.sort(key=lambda p: (p[1] is None, p[1] or 0, p[0]))
    return report


def _filtered(username: str | None, action: str | None, date_from: datetime | None, date_to: datetime | None):
    query = select(AuditEvent)
    if username:
        query = query.where(AuditEvent.username == username)
    if action:
        query = query.where(or_(AuditEvent.action == action, AuditEvent.action.like(action.rstrip(".") + ".%")))
    if date_from is not None:
        query = query.where(AuditEvent.at >= date_from)
    if date_to is not None:
        query = query.where(AuditEvent.at < date_to)
    return query


def search(session: Session, *, username: str | None = None, action: str | None = None,
           date_from: datetime | None = None, date_to: datetime | None = None, limit: int = 200) -> list[AuditEvent]:
    """Events newest first; ``action`` matches itself and its sub-actions (``user`` -> ``user.create``)."""
    write_pending(session)
    query = _filtered(username, action, date_from, date_to).order_by(AuditEvent.id.desc()).limit(limit)
    return list(session.scalars(query))


def iter_events(session: Session, *, username: str | None = None, action: str | None = None,
                date_from: datetime | None = None, date_to: datetime | None = None) -> Iterator[AuditEvent]:
    """Every matching event in chain order (for the CSV export), read in batches."""
    write_pending(session)
    query = _filtered(username, action, date_from, date_to).order_by(AuditEvent.id)
    yield from session.scalars(query.execution_options(yield_per=2000))


def actions(session: Session) -> list[str]:
    """The distinct actions recorded so far (for the admin page's filter)."""
    return list(session.scalars(select(AuditEvent.action).group_by(AuditEvent.action).order_by(AuditEvent.action)))


def count(session: Session) -> int:
    write_pending(session)
    return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
