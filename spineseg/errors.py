"""Domain errors. Each names the offending file or value; the CLI and the web layer map them
to an exit code / HTTP status in one place each."""

from __future__ import annotations


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


class ModelNotFoundError(SpineSegError):
    """No model was given and none is installed, or a named version does not exist."""


class IntegrityError(SpineSegError):
    """Stored data does not match its recorded checksum (e.g. tampered weights)."""
