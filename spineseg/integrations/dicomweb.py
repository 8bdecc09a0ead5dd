"""A DICOMweb PACS (PS3.18): QIDO-RS search for series, WADO-RS retrieve of one series to a
folder, WADO-RS metadata of a series, STOW-RS of result instances.

Built on the ``dicomweb-client`` package (the client the DICOMweb tooling around OHIF and
highdicom uses): it speaks the multipart/related bodies of WADO-RS and STOW-RS, which are easy
to get subtly wrong by hand. This module only adds the endpoint's auth, a bounded retry, and
errors that say which PACS failed and how (unreachable, credentials refused, nothing found).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from spineseg.errors import InputError
from spineseg.integrations import PacsError, check_uid
from spineseg.integrations.endpoints import PacsEndpoint

log = logging.getLogger(__name__)

SEARCH_LIMIT = 200
SERIES_FIELDS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "AccessionNumber",
                 "SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances",
                 "StudyInstanceUID", "SeriesInstanceUID", "BodyPartExamined")
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_MODALITY = re.compile(r"[A-Z0-9]{1,16}")
# WADO-RS: the instances in the transfer syntax the PACS stored them in (``*``). Without it a
# PACS must transcode to Explicit VR Little Endian, which fails for compressed series when it
# has no codec (Orthanc 1.10 cannot decode JPEG 2000: "Cannot transcode image", HTTP 500).
AS_STORED = (("application/dicom", "*"),)


@dataclass(frozen=True)
class SeriesQuery:
    """QIDO-RS filters; empty ones are not sent. ``date``: ``2026-11-24`` or a range
    ``2026-11-01..2026-11-30`` (either side may be empty), matched against the Study Date."""

    patient_id: str = ""
    accession_number: str = ""
    date: str = ""
    modality: str = ""

    def filters(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.patient_id.strip():
            found["PatientID"] = self.patient_id.strip()
        if self.accession_number.strip():
            found["AccessionNumber"] = self.accession_number.strip()
        if self.date.strip():
            found["StudyDate"] = _date_filter(self.date.strip())
        if self.modality.strip():
            modality = self.modality.strip().upper()
            if not _MODALITY.fullmatch(modality):
                raise InputError("modality", f"{self.modality!r} is not a DICOM modality (e.g. CT, MR)")
            found["Modality"] = modality
        return found


def _one_date(text: str) -> str:
    match = _DATE.fullmatch(text)
    if not match:
        raise InputError("date", f"expected a date like 2026-11-24 or a range 2026-11-01..2026-11-30, got {text!r}")
    return "".join(match.groups())


def _date_filter(text: str) -> str:
    if ".." not in text:
        return _one_date(text)
    start, end = (part.strip() for part in text.split("..", 1))
    return f"{_one_date(start) if start else ''}-{_one_date(end) if end else ''}"


def _no_bulk_data(_tag: str, _vr: str, _uri: str) -> None:
    return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value) if value is not None else ""


def series_row(item: dict) -> dict[str, object]:
    """A QIDO-RS series result as plain JSON for the API and the page."""
    ds = Dataset.from_json(item)
    count = ds.get("NumberOfSeriesRelatedInstances")
    return {"study_uid": _text(ds, "StudyInstanceUID"), "series_uid": _text(ds, "SeriesInstanceUID"),
            "patient_id": _text(ds, "PatientID"), "patient_name": _text(ds, "PatientName"),
            "study_date": _text(ds, "StudyDate"), "accession_number": _text(ds, "AccessionNumber"),
            "study_description": _text(ds, "StudyDescription"), "series_description": _text(ds, "SeriesDescription"),
            "series_number": _text(ds, "SeriesNumber"), "modality": _text(ds, "Modality"),
            "body_part": _text(ds, "BodyPartExamined"), "instances": int(count) if count not in (None, "") else None}


class PacsClient:
    """One configured endpoint. Every method raises ``PacsError`` naming the endpoint."""

    def __init__(self, endpoint: PacsEndpoint) -> None:
        self.endpoint = endpoint
        session = requests.Session()
        if endpoint.username:
            session.auth = (endpoint.username, endpoint.password)
        elif endpoint.token:
            session.headers["Authorization"] = f"Bearer {endpoint.token}"
        self._client = DICOMwebClient(endpoint.url, session=session, timeout=endpoint.timeout_s)
        self._client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=500)

    def _failure(self, exc: Exception, doing: str) -> PacsError:
        name = f"PACS {self.endpoint.name!r} ({self.endpoint.url})"
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status in (401, 403):
                return PacsError(f"{name} refused our credentials while {doing} (HTTP {status}): check the "
                                 f"username/password or token of endpoint {self.endpoint.name!r}")
            if status == 404:
                return PacsError(f"{name} has no such object while {doing} (HTTP 404)", status=404)
            return PacsError(f"{name} answered HTTP {status} while {doing}")
        if isinstance(exc, requests.Timeout):
            return PacsError(f"{name} did not answer within {self.endpoint.timeout_s:g} s while {doing}")
        if isinstance(exc, requests.ConnectionError):
            return PacsError(f"{name} could not be reached while {doing}: is it running, and is the url right?")
        return PacsError(f"{name} failed while {doing}: {type(exc).__name__}: {exc}")

    def search_series(self, query: SeriesQuery, *, limit: int = SEARCH_LIMIT) -> list[dict[str, object]]:
        """QIDO-RS ``/series`` with ``query``'s filters, at most ``limit`` rows."""
        filters = query.filters()
        try:
            found = self._client.search_for_series(search_filters=filters, fields=list(SERIES_FIELDS), limit=limit)
        except (requests.RequestException, ValueError) as exc:
            raise self._failure(exc, "searching for series") from exc
        return [series_row(item) for item in found]

    def series_metadata(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """WADO-RS metadata of every instance of the series (no pixels)."""
        try:
            items = self._client.retrieve_series_metadata(study_uid, series_uid)
        except (requests.RequestException, ValueError) as exc:
            raise self._failure(exc, f"reading the metadata of series {series_uid}") from exc
        if not items:
            raise PacsError(f"PACS {self.endpoint.name!r} has no instance of series {series_uid}", status=404)
        # bulk data (pixels, large private values) is left out: only the attributes are needed
        return [Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data) for item in items]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """WADO-RS the series' instances into ``folder`` (``00001.dcm`` ...), one at a time."""
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for ds in self._client.iter_series(study_uid, series_uid, media_types=AS_STORED):
                path = folder / f"{len(written) + 1:05d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
        except (requests.RequestException, ValueError) as exc:
            raise self._failure(exc, f"retrieving series {series_uid} ({len(written)} instance(s) so far)") from exc
        if not written:
            raise PacsError(f"PACS {self.endpoint.name!r} returned no instance of series {series_uid}", status=404)
        return written

    def store(self, datasets: Iterable[pydicom.Dataset]) -> int:
        """STOW-RS ``datasets``; the number the PACS stored. A partial or failed store raises."""
        datasets = list(datasets)
        try:
            response = self._client.store_instances(datasets)
        except (requests.RequestException, ValueError) as exc:
            raise self._failure(exc, f"storing {len(datasets)} result instance(s)") from exc
        failed = response.get("FailedSOPSequence", []) if response is not None else []
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsError(f"PACS {self.endpoint.name!r} refused {len(failed)} of {len(datasets)} result "
                            f"instance(s) (failure reason {', '.join(reasons)})")
        stored = response.get("ReferencedSOPSequence", []) if response is not None else []
        return len(stored)


# --- what the routes call: search, import, send (each audited) ------------------------------

def search(services, *, endpoint_name: str, query: SeriesQuery, username: str) -> list[dict[str, object]]:
    """QIDO-RS on the named endpoint; audited with the filters' names (not their values)."""
    from spineseg.integrations.endpoints import endpoint_named
    from spineseg.store import accounts

    endpoint = endpoint_named(services.settings, endpoint_name)
    rows = PacsClient(endpoint).search_series(query)
    with services.database.session() as session:
        accounts.record(session, username=username, action="pacs.search", target=endpoint.name,
                        detail=f"{', '.join(query.filters()) or 'no filter'}: {len(rows)} series")
    return rows


def import_series(services, *, endpoint_name: str, study_uid: str, series_uid: str, username: str,
                  user_id: int, name: str = ""):
    """WADO-RS one series of the named endpoint into a new study (the upload path: validated,
    de-identified, stored, queued) and link it to its source. The series is checked to be CT
    from its metadata before any pixel is fetched. Nothing is kept when anything fails."""
    from spineseg.integrations.endpoints import endpoint_named
    from spineseg.integrations.pacs_intake import SEGMENTABLE_MODALITIES, accept_pacs_series
    from spineseg.services.study_intake import require_production_model
    from spineseg.store.files import StudyFiles
    from spineseg.store.studies import new_id

    study_uid, series_uid = check_uid(study_uid, "study_uid"), check_uid(series_uid, "series_uid")
    endpoint = endpoint_named(services.settings, endpoint_name)
    require_production_model(services.registry)
    client = PacsClient(endpoint)
    metadata = client.series_metadata(study_uid, series_uid)
    modalities = sorted({str(ds.get("Modality", "") or "?") for ds in metadata})
    if modalities != list(SEGMENTABLE_MODALITIES):
        raise InputError("series_uid", f"series {series_uid} is {'/'.join(modalities)}, not CT: SpineSeg segments "
                                       "CT only, so it was not imported")
    files = StudyFiles.of(services.settings.studies_dir, new_id())
    files.create()
    try:
        paths = client.retrieve_series(study_uid, series_uid, files.input_dir / "retrieved")
    except BaseException:
        files.delete()
        raise
    return accept_pacs_series(services, files, paths, origin="dicomweb", endpoint=endpoint.name, username=username,
                              user_id=user_id, name=name)


def send_result(services, *, study_id: str, username: str) -> dict[str, object]:
    """STOW-RS the current run's DICOM outputs of a study imported over DICOMweb back to its
    endpoint, re-identified so they reference the original series. The original's patient and
    study attributes are read from the PACS now (WADO-RS metadata), never stored here.
    Failures are recorded on the link and in the audit trail, and raised."""
    from spineseg.integrations.endpoints import endpoint_named
    from spineseg.integrations.results import output_name, reidentified, study_result
    from spineseg.store import accounts
    from spineseg.store.pacs_links import mark_send_failed, mark_sent

    result = study_result(services.settings, services.database, study_id)
    link = result.link
    if link.origin != "dicomweb":
        raise PacsError(f"study {study_id} came from the DICOM network (AE {link.endpoint}); its result is sent "
                        "back by C-STORE by the listener, not over DICOMweb", status=409)
    try:
        client = PacsClient(endpoint_named(services.settings, link.endpoint))
        header = client.series_metadata(link.study_uid, link.series_uid)[0]
        datasets = reidentified(result, header)
        stored = client.store(datasets)
    except (PacsError, InputError) as exc:
        with services.database.session() as session:
            mark_send_failed(session, study_id=study_id, error=str(exc))
            accounts.record(session, username=username, action="pacs.send.failed", target=study_id,
                            detail=f"to {link.endpoint}: {str(exc)[:300]}")
        raise
    kinds = [str(ds.get("Modality", "?")) for ds in datasets]
    with services.database.session() as session:
        mark_sent(session, study_id=study_id, job_id=result.job_id)
        accounts.record(session, username=username, action="pacs.send", target=study_id,
                        detail=f"{'+'.join(kinds)} of run {result.job_id[:8]} to {link.endpoint}: {stored} stored")
    log.info("study %s: %s of run %s stored in PACS %s", study_id, "+".join(kinds), result.job_id, link.endpoint)
    return {"study_id": study_id, "run_id": result.job_id, "endpoint": link.endpoint, "stored": stored,
            "modalities": kinds, "outputs": [output_name(path) for path in result.paths],
            "series_uids": [str(ds.SeriesInstanceUID) for ds in datasets]}
