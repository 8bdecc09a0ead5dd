"""First run: while no account exists, the service opens a one-time link to a page that creates
the first admin account, so a newcomer needs no second terminal.

The link carries a random token (``secrets.token_urlsafe``, 192 bits) that is kept only in
memory, as its SHA-256; it expires ``TOKEN_TTL_S`` after the start and works once. The start-up
log prints it (``take_token``, once); a restart while still no account exists opens a new one.
Creating the account is serialised by a lock and guarded in the database
(``accounts.create_first_admin``): of two concurrent submissions exactly one creates an admin,
and once any account exists the page is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable

from spineseg.errors import InputError, SpineSegError
from spineseg.store import accounts
from spineseg.store.database import Database
from spineseg.store.models import User

log = logging.getLogger(__name__)

TOKEN_TTL_S = 30 * 60
SETUP_PATH = "/setup"
NEW_LINK_HINT = "restart `spineseg serve` (or `make serve`) to print a new one"


class FirstRunClosed(SpineSegError):
    """The first-run page is refused: ``status`` 410 (done or expired) or 404 (no such link)."""

    def __init__(self, message: str, status: int = 410) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class FirstRunLink:
    """The one-time token of this process (none until ``issue``). ``clock`` is monotonic seconds."""

    def __init__(self, ttl_s: float = TOKEN_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._digest: bytes | None = None
        self._expires_at = 0.0
        self._used = False
        self._unannounced: str | None = None
        self.lock = threading.Lock()  # held while the first account is created

    def issue(self) -> str:
        """A new token (any earlier one stops working); returned here and once by ``take_token``."""
        token = secrets.token_urlsafe(24)
        self._digest, self._expires_at, self._used = _digest(token), self._clock() + self.ttl_s, False
        self._unannounced = token
        return token

    @property
    def is_open(self) -> bool:
        return self._digest is not None and not self._used and self._clock() < self._expires_at

    def take_token(self) -> str | None:
        """The token not yet printed, once (``None`` afterwards or when none was issued)."""
        token, self._unannounced = self._unannounced, None
        return token

    def check(self, token: str) -> None:
        """Raise ``FirstRunClosed`` unless ``token`` is this link's, unused and unexpired."""
        if self._digest is None:
            raise FirstRunClosed("no first-run link is open in this service: " + NEW_LINK_HINT, 404)
        if not token or not hmac.compare_digest(self._digest, _digest(token)):
            raise FirstRunClosed("this first-run link is not valid: copy the whole link from the start-up "
                                 "log, or " + NEW_LINK_HINT, 404)
        if self._used:
            raise FirstRunClosed("this first-run link was used already: log in with the account it created")
        if self._clock() >= self._expires_at:
            raise FirstRunClosed(f"this first-run link expired ({self.ttl_s / 60:.0f} minutes after the start): "
                                 + NEW_LINK_HINT)

    def close(self) -> None:
        self._used = True


def open_first_run(database: Database) -> FirstRunLink:
    """A link for this process: issued when no account exists, else closed."""
    link = FirstRunLink()
    with database.session() as session:
        if not accounts.any_user_exists(session):
            link.issue()
    return link


def refuse_when_done(database: Database, link: FirstRunLink, token: str) -> None:
    """Raise ``FirstRunClosed`` when an account exists (410) or the token is not usable."""
    with database.session() as session:
        if accounts.any_user_exists(session):
            link.close()
            raise FirstRunClosed("the first admin account exists already: log in, or ask an admin for an account")
    link.check(token)


def create_first_admin(database: Database, link: FirstRunLink, *, token: str, username: str, password: str,
                       password_again: str) -> User:
    """Create the first admin account with the one-time ``token``; the token is spent only when
    the account was created. ``InputError`` (naming the field) leaves the link usable."""
    accounts.check_new_credentials(username, password)
    if password != password_again:
        raise InputError("password_again", "the two passwords differ")
    with link.lock:
        refuse_when_done(database, link, token)
        with database.session() as session:
            user = accounts.create_first_admin(session, username=username, password=password)
            if user is not None:
                accounts.record(session, username=username, action="user.create",
                                target=username, detail="admin (first-run link)")
        link.close()
    if user is None:
        raise FirstRunClosed("the first admin account exists already: log in, or ask an admin for an account")
    log.info("first run: created the admin account %r", username)
    return user
