"""A DICOM network node (pynetdicom): C-ECHO and C-STORE of CT from allowed calling AE titles
that call this node's own AE title, with valid Study, Series and SOP Instance UIDs, while a
usable production model exists (else A700: the sender tries again later);
a series whose instances stop arriving for ``idle_s`` becomes a study and a job (through
``pacs_intake.accept_pacs_series``, the upload path); each finished job's SEG is sent back by
C-STORE to the destination AE.

Received instances are written to ``DATA_DIR/dicom-incoming/<series key>/`` as they arrive
(private to the service's user, like every study file; ``dimse_series``) and removed once the
study is recorded, so a stop or a crash loses nothing. A series becomes a study only when it is
complete by its own evidence: no association bringing it is open, the last one was released
(not dropped, not cut by a stop or a kill, also across a restart), nothing arrived for
``idle_s``, and its headers' declared counts and slice spacing show no missing instance
(``imaging.series_completeness``). Otherwise it is held (kept, not segmented, ``HELD.txt`` and
the log say why) until the sender sends it again or the rest; a series held for
``SPINESEG_DICOM_HELD_HOURS`` is removed, as is one refused when taken in (not segmentable):
raw received files are never kept for good.

The original's patient and study attributes a result needs to be filed beside its source are
kept only with a destination to send it to, sealed with the server's key (``services.sealing``)
in the study's PACS link, and erased once sent or after ``SPINESEG_DICOM_RETURN_DAYS``. The
log names a series by its key, never by its UIDs or its patient.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from datetime import timedelta

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
    Verification,
)

from spineseg.errors import InputError, SpineSegError
from spineseg.imaging.reidentify import return_header_of
from spineseg.imaging.series_completeness import incomplete_series_reasons
from spineseg.integrations import PacsError, check_uid
from spineseg.integrations.dimse_series import EVIDENCE_WAIT_IDLE, IncomingSeries, SeriesCollector
from spineseg.integrations.pacs_intake import accept_pacs_series
from spineseg.integrations.results import header_from_json, reidentified, study_result
from spineseg.services.sealing import SealError, seal, sealing_key, unseal
from spineseg.services.study_intake import IntakeServices, require_production_model
from spineseg.store import accounts
from spineseg.store.files import StudyFiles
from spineseg.store.models import utc_now
from spineseg.store.pacs_links import (
    erase_expired_headers,
    links_awaiting_send,
    mark_send_failed,
    mark_sent,
    set_return_header,
    unsealed_headers,
)
from spineseg.store.studies import new_id

log = logging.getLogger(__name__)

STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage)  # only what can be segmented is accepted
RESULT_CLASSES = (SegmentationStorage, RTStructureSetStorage, Comprehensive3DSRStorage)  # SR: services.dicom_sr
SUCCESS, OUT_OF_RESOURCES, NOT_CT, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
SEND_POLL_S = 2.0
CLOSE_GRACE_S = 2.0
EXPIRY_SWEEP_S = 5.0  # one query on pacs_links
_DESTINATION = re.compile(r"([^@\s]{1,16})@([^:\s]+):(\d{1,5})")


def _status(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (LO: at most 64 characters)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


def parse_destination(text: str) -> tuple[str, str, int]:
    """``AE_TITLE@host:port`` -> (ae, host, port); ``PacsError`` naming the setting otherwise."""
    match = _DESTINATION.fullmatch(text.strip())
    if not match:
        raise PacsError(f"SPINESEG_DICOM_DESTINATION {text!r} must be AE_TITLE@host:port (e.g. PACS@10.0.0.5:104)")
    return match.group(1), match.group(2), int(match.group(3))


class DicomNode:
    """The listener: ``start()`` binds the port and starts the idle and send threads; ``stop()``."""

    def __init__(self, services: IntakeServices, *, ae_title: str, host: str, port: int,
                 allowed_aes: tuple[str, ...], idle_s: float, destination: str, owner: tuple[str, int]) -> None:
        if not allowed_aes:
            raise PacsError("no calling AE title is allowed: set SPINESEG_DICOM_ALLOWED_AES (or --allow AE) to the "
                            "AE titles of the PACS or scanners that may send")
        self.services = services
        self.ae_title, self.host, self.port = ae_title, host, port
        self.allowed = allowed_aes
        self.idle_s = idle_s
        self.destination = parse_destination(destination) if destination else None
        self.owner = owner
        settings = services.settings
        for name, value in (("SPINESEG_DICOM_RETURN_DAYS", settings.dicom_return_days),
                            ("SPINESEG_DICOM_HELD_HOURS", settings.dicom_held_hours)):
            if value < 1:
                raise PacsError(f"{name} must be a whole number of at least 1, got {value}")
        self.return_for = timedelta(days=settings.dicom_return_days)
        self.held_for_s = settings.dicom_held_hours * 3600.0
        self._key = sealing_key(settings)
        self._next_expiry_sweep = 0.0
        self.collector = SeriesCollector(services.settings.data_dir / "dicom-incoming")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._association_series: dict[object, set[str]] = {}  # association -> series keys it brought
        self._next_send: dict[str, tuple[float, float]] = {}  # study id -> (next try, backoff)

    # --- receiving ------------------------------------------------------------------------
    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int | Dataset:
        calling = event.assoc.requestor.ae_title.strip()
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("AE %s sent an instance that cannot be decoded: %s", calling, exc)
            return 0xC210
        if str(ds.get("Modality", "")) != "CT":
            log.warning("AE %s sent a %s instance: only CT is taken", calling, ds.get("Modality", "?"))
            return NOT_CT
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            try:  # they name folders, files and rows: "../../x" or 200 characters never get that far
                check_uid(str(ds.get(keyword, "") or ""), keyword)
            except InputError:  # the value itself is not logged: it could be anything
                log.warning("AE %s sent an instance refused: its %s is not a DICOM UID", calling, keyword)
                return _status(CANNOT_UNDERSTAND, f"{keyword} is not a DICOM UID")
        try:  # work that cannot run is refused (the sender retries later), not stored to fail
            require_production_model(self.services.registry)
        except SpineSegError as exc:
            log.error("instance from AE %s refused: %s", calling, exc)
            return _status(OUT_OF_RESOURCES, "no usable model: the node cannot segment now")
        try:
            entry = self.collector.store(calling, ds, id(event.assoc))
        except OSError as exc:
            log.error("could not keep an instance from AE %s: %s", calling, exc)
            return OUT_OF_RESOURCES
        self._association_series.setdefault(event.assoc, set()).add(entry.key)
        return SUCCESS

    def _on_connection_closed(self, event) -> None:
        """A closed connection is a drop only if neither a release nor an abort was seen: the
        peer closes its socket right after our A-RELEASE response, so this event can come
        before EVT_RELEASED. Decided after ``CLOSE_GRACE_S``, once either had its chance."""
        timer = threading.Timer(CLOSE_GRACE_S, self._on_ended, (event,), {"aborted": True})
        timer.daemon = True
        timer.start()

    def _on_ended(self, event, *, aborted: bool) -> None:
        keys = self._association_series.pop(event.assoc, set())
        if keys:
            calling = event.assoc.requestor.ae_title.strip()
            if aborted:
                log.warning("association from AE %s was dropped: %d series partly received are kept and wait for "
                            "the rest", calling, len(keys))
            self.collector.association_ended(keys, id(event.assoc), aborted=aborted)

    def _on_rejected(self, event) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        called = str(getattr(event.assoc.requestor.primitive, "called_ae_title", "") or "").strip()
        reasons = []
        if calling not in self.allowed:
            reasons.append("calling AE title not allowed")
            log.warning("association from AE %r (%s) refused: not one of the allowed AE titles %s", calling,
                        event.assoc.requestor.address, ", ".join(self.allowed))
        if called != self.ae_title.strip():
            reasons.append(f"called AE title {called[:16]!r} is not this node's")
            log.warning("association from AE %r (%s) refused: it called AE title %r, this node is %r", calling,
                        event.assoc.requestor.address, called[:16], self.ae_title)
        with self.services.database.session() as session:
            accounts.record(session, username=None, action="dicom.refused", target=calling[:64],
                            detail=f"from {event.assoc.requestor.address}: " + ("; ".join(reasons) or "refused"))

    # --- taking series in and sending results ------------------------------------------------
    def _refuse(self, entry: IncomingSeries, reason: str) -> None:
        """Remove a received series that cannot become a study, saying why (log and audit)."""
        shutil.rmtree(entry.folder, ignore_errors=True)
        log.error("series %s from AE %s (%d instance(s)) refused and removed: %s", entry.key, entry.calling_ae,
                  len(entry.instances), reason)
        with self.services.database.session() as session:
            accounts.record(session, username=None, action="dicom.refused", target=entry.calling_ae[:64],
                            detail=f"series {entry.key} ({len(entry.instances)} instance(s)) removed: {reason}"[:500])

    def _expire(self, entry: IncomingSeries) -> None:
        self._refuse(entry, f"held for {self.held_for_s / 3600:g} h and never completed by the sender")

    def _intake(self, entry: IncomingSeries) -> None:
        try:  # no usable model: the series waits (kept) and is taken in once one is promoted
            require_production_model(self.services.registry)
        except SpineSegError as exc:
            entry.last_seen = time.monotonic()
            self.collector.put_back(entry)
            log.error("series %s from AE %s waits, kept: %s", entry.key, entry.calling_ae, exc)
            return
        sources = sorted(p for p in entry.folder.glob("*.dcm") if p.is_file())
        try:
            headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, TypeError, KeyError, EOFError) as exc:
            self._refuse(entry, f"an instance cannot be read again ({type(exc).__name__})")
            return
        missing = incomplete_series_reasons(headers)
        if missing and not entry.take_incomplete:  # released and idle, but it says it is not whole
            wait_s = min(EVIDENCE_WAIT_IDLE * self.idle_s, self.held_for_s)
            message = (f"series {entry.key} from AE {entry.calling_ae}: {'; '.join(missing)}; it is held (kept, not "
                       f"segmented) for the sender to send the rest, and taken in as it is if nothing more arrives "
                       f"in {wait_s:g} s")
            entry.hold(message, by_evidence=True)
            self.collector.put_back(entry)
            log.warning("%s", message)
            return
        if missing:
            log.warning("series %s from AE %s: nothing more arrived while it was held, so it is taken in as it is "
                        "(%s)", entry.key, entry.calling_ae, "; ".join(missing))
        header = return_header_of(headers[0]) if headers and self.destination is not None else None
        del headers
        files = StudyFiles.of(self.services.settings.studies_dir, new_id())
        files.create()
        target = files.input_dir / "received"
        target.mkdir(parents=True)
        paths = [target / p.name for p in sources]
        for source, copy in zip(sources, paths, strict=True):
            shutil.copyfile(source, copy)
        try:
            accepted = accept_pacs_series(self.services, files, paths, origin="dimse", endpoint=entry.calling_ae,
                                          username=self.owner[0], user_id=self.owner[1])
        except SpineSegError as exc:  # not segmentable (not CT, unreadable...): nothing will come of it
            self._refuse(entry, self._without_identifiers(str(exc), sources))
            return
        if header is not None:  # only while a result can go back, sealed, until it expires
            with self.services.database.session() as session:
                set_return_header(session, study_id=accepted.study_id, sealed=seal(self._key, header),
                                  expires_at=utc_now() + self.return_for)
        with self.collector.lock:
            if entry.key in self.collector.series:  # more arrived meanwhile: only what was taken in goes
                for source in sources:
                    source.unlink(missing_ok=True)
            else:
                shutil.rmtree(entry.folder, ignore_errors=True)  # the study holds it now (de-identified)
        log.info("series %s from AE %s (%d instance(s)) -> study %s, job %s", entry.key, entry.calling_ae,
                 len(paths), accepted.study_id, accepted.job_id)

    @staticmethod
    def _without_identifiers(text: str, paths: list) -> str:
        """An intake error's text with the series' original UIDs taken out (they are identifiers)."""
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID",
                                                                                   "SeriesInstanceUID"])
            except (pydicom.errors.InvalidDicomError, OSError, ValueError, TypeError, KeyError, EOFError):
                continue
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
                uid = str(ds.get(keyword, "") or "")
                if uid:
                    text = text.replace(uid, f"<{keyword}>")
            break
        return text

    def send_result(self, study_id: str, header: dict | None) -> int:
        """C-STORE the current run's DICOM outputs of a study to the destination; instances stored."""
        if self.destination is None:
            raise PacsError("no destination AE is configured (SPINESEG_DICOM_DESTINATION)", status=409)
        result = study_result(self.services.settings, self.services.database, study_id)
        if header is None:
            raise PacsError(f"study {study_id}: the original's patient attributes were already erased (after an "
                            "earlier send, or expired)", status=409)
        try:
            opened = unseal(self._key, header) if isinstance(header, str) else header
        except SealError as exc:
            raise PacsError(f"study {study_id}: the original's patient attributes cannot be read: {exc}",
                            status=409) from exc
        datasets = reidentified(result, header_from_json(opened))
        dest_ae, host, port = self.destination
        ae = AE(ae_title=self.ae_title)
        for sop_class in RESULT_CLASSES:
            ae.add_requested_context(sop_class)
        assoc = ae.associate(host, port, ae_title=dest_ae)
        if not assoc.is_established:
            raise PacsError(f"destination AE {dest_ae} at {host}:{port} did not accept an association "
                            "(is it running, does it know our AE title?)")
        stored = 0
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status is not None and "Status" in status else None
                if code != SUCCESS:
                    raise PacsError(f"destination AE {dest_ae} answered C-STORE of {ds.Modality} with status "
                                    f"{'none (connection lost)' if code is None else hex(code)}")
                stored += 1
        finally:
            assoc.release()
        with self.services.database.session() as session:
            mark_sent(session, study_id=study_id, job_id=result.job_id)
            accounts.record(session, username=self.owner[0], action="pacs.send", target=study_id,
                            detail=f"{'+'.join(str(d.Modality) for d in datasets)} of run {result.job_id[:8]} "
                                   f"by C-STORE to {dest_ae}: {stored} stored")
        return stored

    def _send_waiting(self) -> None:
        with self.services.database.session() as session:
            waiting = [(link.study_id, link.return_header)
                       for link, _job in links_awaiting_send(session, origin="dimse") if link.return_header is not None]
        now = time.monotonic()
        for study_id, header in waiting:
            next_try, backoff = self._next_send.get(study_id, (0.0, 5.0))
            if now < next_try:
                continue
            try:
                stored = self.send_result(study_id, header)
                self._next_send.pop(study_id, None)
                log.info("study %s: result sent to %s (%d instance(s))", study_id, self.destination[0], stored)
            except (PacsError, OSError, RuntimeError) as exc:
                self._next_send[study_id] = (now + backoff, min(backoff * 2, 600.0))
                log.error("study %s: result not sent (tried again in %.0f s): %s", study_id, backoff, exc)
                with self.services.database.session() as session:
                    mark_send_failed(session, study_id=study_id, error=str(exc))

    def _erase_expired(self) -> None:
        """Return headers whose time is up are erased (retention of the identity)."""
        if time.monotonic() < self._next_expiry_sweep:
            return
        self._next_expiry_sweep = time.monotonic() + EXPIRY_SWEEP_S
        with self.services.database.session() as session:
            erased = erase_expired_headers(session)
            for study_id in erased:
                accounts.record(session, username=None, action="pacs.identity_expired", target=study_id,
                                detail=f"the sealed return header was erased after {self.return_for.days} day(s) "
                                       "without a send")
        for study_id in erased:
            log.warning("study %s: its original's patient attributes expired unsent and were erased", study_id)

    def _seal_legacy_headers(self) -> None:
        """Rows from before sealing hold the attributes themselves: sealed now, with an expiry,
        or erased when no destination could use them."""
        with self.services.database.session() as session:
            legacy = unsealed_headers(session)
            for link in legacy:
                if self.destination is None:
                    link.return_header = None
                else:
                    set_return_header(session, study_id=link.study_id, sealed=seal(self._key, link.return_header),
                                      expires_at=utc_now() + self.return_for)
        if legacy:
            log.info("%d return header(s) stored unsealed by an earlier version were %s", len(legacy),
                     "sealed" if self.destination is not None else "erased (no destination is configured)")

    def _loop(self) -> None:
        while not self._stop.wait(min(SEND_POLL_S, self.idle_s / 4)):
            try:
                ready, expired = self.collector.due(self.idle_s, self.held_for_s)
                for entry in expired:
                    self._expire(entry)
                for entry in ready:
                    self._intake(entry)
                self._erase_expired()
                if self.destination is not None:
                    self._send_waiting()
            except Exception:  # the loop must outlive one bad series or database hiccup
                log.exception("DICOM node housekeeping failed; trying again")

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.collector.recover()
        self._seal_legacy_headers()
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = list(self.allowed)
        ae.require_called_aet = True  # an association meant for another node is refused
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:  # kept as sent (JPEG 2000 ... too: the readers decode them)
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_RELEASED, lambda e: self._on_ended(e, aborted=False)),
                    (evt.EVT_ABORTED, lambda e: self._on_ended(e, aborted=True)),
                    (evt.EVT_CONN_CLOSE, self._on_connection_closed),
                    (evt.EVT_REJECTED, self._on_rejected)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        thread = threading.Thread(target=self._loop, name="dicom-node", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("DICOM node %s listening on %s:%d; allowed calling AEs: %s; a series idle for %g s becomes a "
                 "study; results go to %s", self.ae_title, self.host, self.port, ", ".join(self.allowed),
                 self.idle_s, "{}@{}:{}".format(*self.destination) if self.destination else "nowhere (no destination)")

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=10)
