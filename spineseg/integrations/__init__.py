"""The PACS edge: DICOMweb (``dicomweb``: QIDO-RS search, WADO-RS import, STOW-RS of results)
and the DICOM network (``dimse``: a C-ECHO / C-STORE node that turns received series into
studies and sends each SEG back by C-STORE).

Above ``services`` (every series taken in goes through ``services.study_intake.accept_study``,
like an upload: validated, de-identified, stored, queued), below ``web`` and ``cli``. The link
back to the source (original UIDs) lives only in ``store.pacs_links``.
"""

from __future__ import annotations

import re

from spineseg.errors import InputError, SpineSegError

UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_CHARS = 64  # DICOM PS3.5 9.1: digits and dots, at most 64 characters


def check_uid(value: str, name: str) -> str:
    """``value`` (stripped) when it is a DICOM UID, else ``InputError`` naming ``name``: a UID
    names files and rows here, so "../../x" or 200 characters must never get that far."""
    value = value.strip()
    if not (0 < len(value) <= MAX_UID_CHARS and UID_PATTERN.fullmatch(value)):
        raise InputError(name, f"{value[:80]!r} is not a DICOM UID (digits and dots, at most {MAX_UID_CHARS} "
                               "characters)")
    return value


class PacsError(SpineSegError):
    """A PACS could not be reached or refused a request; ``status`` is the HTTP status the web
    layer answers with (502 unreachable or refusing, 404 nothing found, 409 not possible now)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
