"""Values kept on the server that identify a patient, sealed at rest with a key derived from the
server's secret (``Settings.session_secret``): authenticated encryption (Fernet: AES-128-CBC
with an HMAC-SHA256 tag, from ``cryptography``), so a copy of the database alone reads nothing
and an altered value is refused, not used.

The key is derived through HMAC with a purpose label, as ``deidentification_key`` is, so the
secret itself serves one purpose only; a new secret makes sealed values unreadable (they are
then treated as gone, with a reason), which is what rotating a leaked secret should do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from spineseg.config import Settings

PURPOSE = b"spineseg sealed identity v1"


class SealError(ValueError):
    """A sealed value that cannot be opened (another server secret, or altered)."""


def sealing_key(settings: Settings) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) derived from the server's secret."""
    digest = hmac.new(settings.session_secret().encode(), PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest)


def seal(key: bytes, value: dict[str, Any]) -> str:
    """``value`` (JSON-serialisable) as an opaque ASCII token."""
    return Fernet(key).encrypt(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")


def unseal(key: bytes, token: str) -> dict[str, Any]:
    """The value ``seal`` was given; ``SealError`` when ``token`` was sealed with another key or
    changed since."""
    try:
        return json.loads(Fernet(key).decrypt(token.encode("ascii")))
    except (InvalidToken, UnicodeEncodeError, ValueError) as exc:
        raise SealError("the sealed value cannot be opened: it was sealed under another server secret "
                        "(SPINESEG_SECRET_KEY changed) or altered") from exc
