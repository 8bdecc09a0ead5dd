"""A DICOM network node (pynetdicom): C-ECHO and C-STORE of CT from allowed calling AE titles
that call this node's own AE title, with valid Study, Series and SOP Instance UIDs, while a
usable production model exists (else A700: the sender tries again later);
a series whose instances stop arriving for ``idle_s`` becomes a study and a job (through
``pacs_intake.accept_pacs_series``, the upload path); each finished job's SEG is sent back by
C-STORE to the destination AE.

Received instances are written to ``DATA_DIR/dicom-incoming/<series key>/`` as they arrive
(private to the service's user, like every study file) and removed only once the study is
recorded, so a stop or a crash loses nothing: the next start takes in what is there. A series
whose last association was aborted (the sender dropped the connection) is held, not segmented:
its instances are kept, the log and ``HELD.txt`` in its folder say so, and the sender's next
complete association (sending the series again, or the rest) releases it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
    Verification,
)

from spineseg.errors import InputError, SpineSegError
from spineseg.integrations import PacsError, check_uid
from spineseg.integrations.pacs_intake import accept_pacs_series
from spineseg.integrations.results import header_from_json, reidentified, study_result
from spineseg.services.study_intake import IntakeServices, require_production_model
from spineseg.store import accounts
from spineseg.store.files import StudyFiles
from spineseg.store.pacs_links import links_awaiting_send, mark_send_failed, mark_sent
from spineseg.store.studies import new_id

log = logging.getLogger(__name__)

STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage)  # only what can be segmented is accepted
RESULT_CLASSES = (SegmentationStorage, RTStructureSetStorage)
SUCCESS, OUT_OF_RESOURCES, NOT_CT, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
HELD_NOTE = "HELD.txt"
SEND_POLL_S = 2.0
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


@dataclass
class IncomingSeries:
    folder: Path
    calling_ae: str
    series_uid: str
    last_seen: float
    instances: set[str] = field(default_factory=set)
    aborted: bool = False  # the last association that brought instances of it was dropped
    held: bool = False  # idle after an aborted association: waiting for the sender


class SeriesCollector:
    """The series being received, keyed by (calling AE, Series Instance UID)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.series: dict[str, IncomingSeries] = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(calling_ae: str, series_uid: str) -> str:
        return hashlib.sha256(f"{calling_ae}\x00{series_uid}".encode()).hexdigest()[:32]

    def store(self, calling_ae: str, ds: Dataset) -> IncomingSeries:
        """Write one instance (named by its SOP Instance UID's hash: a resend replaces it)."""
        series_uid = str(ds.get("SeriesInstanceUID", ""))
        key = self.key(calling_ae, series_uid)
        with self.lock:
            entry = self.series.get(key)
            if entry is None:
                entry = IncomingSeries(self.root / key, calling_ae, series_uid, time.monotonic())
                entry.folder.mkdir(parents=True, exist_ok=True)
                (entry.folder / "AE").write_text(calling_ae)
                self.series[key] = entry
            name = hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:24] + ".dcm"
            tmp = entry.folder / f".part-{name}"
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(entry.folder / name)
            entry.instances.add(str(ds.SOPInstanceUID))
            entry.last_seen = time.monotonic()
            entry.held = False
            (entry.folder / HELD_NOTE).unlink(missing_ok=True)
        return entry

    def association_ended(self, calling_ae: str, series_keys: set[str], *, aborted: bool) -> None:
        with self.lock:
            for key in series_keys:
                if key in self.series:
                    self.series[key].aborted = aborted
                    self.series[key].last_seen = time.monotonic()

    def recover(self) -> None:
        """Series a previous process left (a stop or a crash): taken in at the next idle check."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = [p for p in folder.glob("*.dcm") if p.is_file()]
            if not files:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            ae = (folder / "AE").read_text().strip() if (folder / "AE").is_file() else "UNKNOWN"
            held = (folder / HELD_NOTE).is_file()
            self.series[folder.name] = IncomingSeries(folder, ae, "", time.monotonic(), {p.stem for p in files},
                                                      aborted=held, held=held)
            log.info("found %d instance(s) from AE %s left by an earlier run%s", len(files), ae,
                     " (held: its association had been dropped)" if held else "")

    def idle(self, idle_s: float) -> list[IncomingSeries]:
        """Series with no new instance for ``idle_s``, removed from the collector; an aborted
        one is marked held instead (kept, with a note) and not returned."""
        now, ready = time.monotonic(), []
        with self.lock:
            for key, entry in list(self.series.items()):
                if entry.held or now - entry.last_seen < idle_s:
                    continue
                if entry.aborted:
                    entry.held = True
                    message = (f"the association from AE {entry.calling_ae} was dropped after {len(entry.instances)} "
                               f"instance(s) of series {entry.series_uid or '(recovered)'}; nothing more arrived in "
                               f"{idle_s:g} s, so the series is held (kept, not segmented): send it again")
                    (entry.folder / HELD_NOTE).write_text(message + "\n")
                    log.warning("%s", message)
                    continue
                ready.append(self.series.pop(key))
        return ready


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
        self.collector = SeriesCollector(services.settings.data_dir / "dicom-incoming")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._association_series: dict[int, set[str]] = {}
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
            except InputError as exc:
                log.warning("AE %s sent an instance refused: %s", calling, exc)
                return _status(CANNOT_UNDERSTAND, f"{keyword} is not a DICOM UID")
        try:  # work that cannot run is refused (the sender retries later), not stored to fail
            require_production_model(self.services.registry)
        except SpineSegError as exc:
            log.error("instance from AE %s refused: %s", calling, exc)
            return _status(OUT_OF_RESOURCES, "no usable model: the node cannot segment now")
        try:
            entry = self.collector.store(calling, ds)
        except OSError as exc:
            log.error("could not keep an instance from AE %s: %s", calling, exc)
            return OUT_OF_RESOURCES
        self._association_series.setdefault(id(event.assoc), set()).add(SeriesCollector.key(calling, entry.series_uid))
        return SUCCESS

    def _on_ended(self, event, *, aborted: bool) -> None:
        keys = self._association_series.pop(id(event.assoc), set())
        if keys:
            calling = event.assoc.requestor.ae_title.strip()
            if aborted:
                log.warning("association from AE %s was dropped: %d series partly received are kept and wait for "
                            "the rest", calling, len(keys))
            self.collector.association_ended(calling, keys, aborted=aborted)

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
    def _intake(self, entry: IncomingSeries) -> None:
        try:  # no usable model: the series waits (kept) and is taken in once one is promoted
            require_production_model(self.services.registry)
        except SpineSegError as exc:
            entry.last_seen = time.monotonic()
            with self.collector.lock:
                self.collector.series[entry.folder.name] = entry
            log.error("series from AE %s waits, kept: %s", entry.calling_ae, exc)
            return
        files = StudyFiles.of(self.services.settings.studies_dir, new_id())
        files.create()
        target = files.input_dir / "received"
        shutil.copytree(entry.folder, target, ignore=shutil.ignore_patterns("AE", HELD_NOTE, ".part-*"))
        paths = sorted(target.glob("*.dcm"))
        try:
            accepted = accept_pacs_series(self.services, files, paths, origin="dimse", endpoint=entry.calling_ae,
                                          username=self.owner[0], user_id=self.owner[1], keep_header=True)
        except SpineSegError as exc:  # refused (not CT, unreadable...): kept for a person to look at
            (entry.folder / HELD_NOTE).write_text(f"refused: {exc}\n")
            entry.held = True
            with self.collector.lock:
                self.collector.series[entry.folder.name] = entry
            log.error("series of %d instance(s) from AE %s refused and kept in %s: %s", len(paths),
                      entry.calling_ae, entry.folder, exc)
            return
        shutil.rmtree(entry.folder, ignore_errors=True)  # the study holds it now (de-identified)
        log.info("series from AE %s (%d instance(s)) -> study %s, job %s", entry.calling_ae, len(paths),
                 accepted.study_id, accepted.job_id)

    def send_result(self, study_id: str, header: dict | None) -> int:
        """C-STORE the current run's DICOM outputs of a study to the destination; instances stored."""
        if self.destination is None:
            raise PacsError("no destination AE is configured (SPINESEG_DICOM_DESTINATION)", status=409)
        result = study_result(self.services.settings, self.services.database, study_id)
        if header is None:
            raise PacsError(f"study {study_id}: the original's patient attributes were already erased after an "
                            "earlier send", status=409)
        datasets = reidentified(result, header_from_json(header))
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

    def _loop(self) -> None:
        while not self._stop.wait(min(SEND_POLL_S, self.idle_s / 4)):
            try:
                for entry in self.collector.idle(self.idle_s):
                    self._intake(entry)
                if self.destination is not None:
                    self._send_waiting()
            except Exception:  # the loop must outlive one bad series or database hiccup
                log.exception("DICOM node housekeeping failed; trying again")

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.collector.recover()
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = list(self.allowed)
        ae.require_called_aet = True  # an association meant for another node is refused
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:  # kept as sent (JPEG 2000 ... too: the readers decode them)
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_RELEASED, lambda e: self._on_ended(e, aborted=False)),
                    (evt.EVT_ABORTED, lambda e: self._on_ended(e, aborted=True)),
                    (evt.EVT_CONN_CLOSE, lambda e: self._on_ended(e, aborted=True)),
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
