"""The PACS edge: DICOMweb (``dicomweb``: QIDO-RS search, WADO-RS import, STOW-RS of results)
and the DICOM network (``dimse``: a C-ECHO / C-STORE node that turns received series into
studies and sends each SEG back by C-STORE).

Above ``services`` (every series taken in goes through ``services.study_intake.accept_study``,
like an upload: validated, de-identified, stored, queued), below ``web`` and ``cli``. The link
back to the source (original UIDs) lives only in ``store.pacs_links``.
"""

from __future__ import annotations

from spineseg.errors import SpineSegError


class PacsError(SpineSegError):
    """A PACS could not be reached or refused a request; ``status`` is the HTTP status the web
    layer answers with (502 unreachable or refusing, 404 nothing found, 409 not possible now)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
