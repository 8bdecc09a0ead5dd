"""Domain errors. Each names the offending file or value; the CLI and the web layer map them
to an exit code / HTTP status in one place each."""

from __future__ import annotations

import re
from collections.abc import Iterable

# A run of "/dir" parts ending in "/", not preceded by a word character (so "a/b" is kept).
_ABSOLUTE_DIRS = re.compile(r"(?<![\w.:~-])(?:/[^\s/:'\"]+)+/")


# An error message quotes the value it refuses, but never whole: a long "name" must not come
# back in an answer or a page. Where a message leaves the server (web.errors, web.flash, once
# server paths are stripped) a long one keeps its start and end (the value's beginning, and the
# rule it broke) and says how much was cut between.
MAX_MESSAGE_CHARS = 600


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its first and last ``limit // 2 - 20``
    with ``…[N characters cut]…`` between."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 20, 1)
    return f"{text[:keep]} …[{len(text) - 2 * keep} characters cut]… {text[-keep:]}"


class SpineSegError(Exception):
    """Base class for every error SpineSeg raises on purpose."""


class InputError(SpineSegError):
    """The caller gave us something we cannot use (bad file, bad value).

    ``source`` names the file or parameter, ``reason`` says what is wrong with it.
    """

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = " ".join(reason.split())  # one line, whatever a library's message held
        super().__init__(f"{self.source}: {reason}")


class InputTooLarge(InputError):
    """An input that is well formed but larger than this server agrees to handle (voxels,
    memory, bytes); the web layer answers 413 instead of 422."""

    status = 413


def strip_server_paths(text: str) -> str:
    """``text`` with the folders of absolute paths removed (``/srv/data/studies/x/ct.nii``
    -> ``ct.nii``): error messages shown to clients must not reveal the server's layout."""
    return _ABSOLUTE_DIRS.sub("", text)


def public_text(text: str, known: Iterable[tuple[object, str]] = ()) -> str:
    """``text`` for a client: each ``(folder or file, words)`` in ``known`` becomes those words
    (``folder/`` in front of a name is dropped, the name stays), then every other absolute
    folder goes too (``strip_server_paths``)."""
    for where, words in known:
        text = text.replace(f"{where}/", "").replace(str(where), words)
    return strip_server_paths(text)


class ModelNotFoundError(SpineSegError):
    """No model was given and none is installed, or a named version does not exist."""


class ModelUnavailableError(SpineSegError):
    """A model exists but cannot be used now (its weights are missing, unreadable or do not
    match their recorded sha256): work that needs it is refused with this reason (HTTP 503)
    instead of being accepted and failing later."""


class StorageFullError(SpineSegError):
    """The data directory has not room for what was asked, with the reserve the service keeps
    for results, the database and its log: refused before anything is written (HTTP 507)."""


class IntegrityError(SpineSegError):
    """Stored data does not match its recorded checksum (e.g. tampered weights)."""
