"""The series the DICOM node is receiving, on disk and in memory (``SeriesCollector``).

Each series (keyed by calling AE and Series Instance UID, hashed: the key names its folder and
the log, never the UID itself) is written to ``DATA_DIR/dicom-incoming/<key>/`` as instances
arrive. Beside the instances, small files record what a restart must know:

```
AE          the calling AE title
RELEASED    every association that brought instances of it ended with a release; removed
            when the next instance arrives. Absent after a restart: the listener stopped (or
            was killed) while an association was open, so the series may be cut short
HELD.txt    why it is held (kept, not segmented) and since when (its modification time); a
            note starting ``incomplete:`` is a hold by the headers' evidence alone
```

A series is **ready** (to become a study) only when no association bringing it is open, the last
one was released (not dropped, not cut by a stop), and nothing arrived for ``idle_s``. A series
whose association was dropped, or that a restart found without ``RELEASED``, is **held** instead,
until the sender sends it again or the rest (an instance clears the hold) or until it expires
(``expired``: its raw files are removed, as nothing will come of them).

A series whose associations were released but whose headers say instances are missing (the
node decides that, ``imaging.series_completeness``) is held by evidence: the sender may still
send the rest, but the hole may also be in the source (a slab with uneven slices). After
``EVIDENCE_WAIT_IDLE`` idle times with nothing more it is taken in as it is (``due`` returns it
with ``take_incomplete``), saying so: it was whole as far as anyone will send it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

HELD_NOTE = "HELD.txt"
INCOMPLETE = "incomplete: "
EVIDENCE_WAIT_IDLE = 30  # a hold by evidence alone lasts this many idle times (5 min at the default 10 s)
RELEASED = "RELEASED"
AE_FILE = "AE"


@dataclass
class IncomingSeries:
    folder: Path
    calling_ae: str
    last_seen: float  # time.monotonic() of the last instance or association end
    instances: set[str] = field(default_factory=set)
    open_associations: set[int] = field(default_factory=set)  # still bringing instances of it
    cut: str = ""  # why its last association did not end with a release ("" when it did)
    held_since: float | None = None  # time.time() when it was held; None: not held
    by_evidence: bool = False  # held because its headers say instances are missing (released, though)
    take_incomplete: bool = False  # its evidence hold is over: taken in as it is

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def hold(self, reason: str, *, by_evidence: bool = False) -> None:
        """Keep it, not segmented, with ``reason`` in its folder; the hold's age starts now."""
        (self.folder / HELD_NOTE).write_text((INCOMPLETE if by_evidence else "") + reason + "\n")
        self.held_since = time.time()
        self.by_evidence = by_evidence


class SeriesCollector:
    """The series being received, by key (``key(calling AE, Series Instance UID)``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.series: dict[str, IncomingSeries] = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(calling_ae: str, series_uid: str) -> str:
        return hashlib.sha256(f"{calling_ae}\x00{series_uid}".encode()).hexdigest()[:32]

    def store(self, calling_ae: str, ds: Dataset, association: int) -> IncomingSeries:
        """Write one instance (named by its SOP Instance UID's hash: a resend replaces it),
        brought by ``association`` (open until ``association_ended``)."""
        key = self.key(calling_ae, str(ds.get("SeriesInstanceUID", "")))
        with self.lock:
            entry = self.series.get(key)
            if entry is None:
                entry = IncomingSeries(self.root / key, calling_ae, time.monotonic())
                entry.folder.mkdir(parents=True, exist_ok=True)
                (entry.folder / AE_FILE).write_text(calling_ae)
                self.series[key] = entry
            (entry.folder / RELEASED).unlink(missing_ok=True)  # before the instance: a crash now leaves it cut
            name = hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:24] + ".dcm"
            tmp = entry.folder / f".part-{name}"
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(entry.folder / name)
            entry.instances.add(name)
            entry.open_associations.add(association)
            entry.last_seen = time.monotonic()
            if entry.held:
                entry.held_since, entry.by_evidence = None, False
                (entry.folder / HELD_NOTE).unlink(missing_ok=True)
        return entry

    def association_ended(self, keys: set[str], association: int, *, aborted: bool) -> None:
        """The association that brought instances of the series ``keys`` ended (released, or
        dropped when ``aborted``)."""
        with self.lock:
            for key in keys:
                entry = self.series.get(key)
                if entry is None:
                    continue
                entry.open_associations.discard(association)
                entry.last_seen = time.monotonic()
                if aborted:
                    entry.cut = (f"the association from AE {entry.calling_ae} was dropped after "
                                 f"{len(entry.instances)} instance(s)")
                elif not entry.open_associations:
                    entry.cut = ""
                    (entry.folder / RELEASED).write_text("")

    def recover(self) -> None:
        """Series a previous process left (a stop or a crash). One it left without ``RELEASED``
        was cut short by that stop and is held once idle, like a dropped association."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for partial in folder.glob(".part-*"):
                partial.unlink(missing_ok=True)
            files = {p.name for p in folder.glob("*.dcm") if p.is_file()}
            if not files:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            ae = (folder / AE_FILE).read_text().strip() if (folder / AE_FILE).is_file() else "UNKNOWN"
            entry = IncomingSeries(folder, ae, time.monotonic(), files)
            note = folder / HELD_NOTE
            if note.is_file():
                entry.held_since = note.stat().st_mtime
                entry.by_evidence = note.read_text(errors="replace").startswith(INCOMPLETE)
            elif not (folder / RELEASED).is_file():
                entry.cut = (f"the listener stopped while an association from AE {ae} was bringing it "
                             f"({len(files)} instance(s) had arrived)")
            self.series[folder.name] = entry
            state = "held" if entry.held else ("cut short by the stop" if entry.cut else "complete when it stopped")
            log.info("series %s: %d instance(s) from AE %s left by an earlier run (%s)", folder.name, len(files), ae,
                     state)

    def due(self, idle_s: float, held_for_s: float) -> tuple[list[IncomingSeries], list[IncomingSeries]]:
        """(ready, expired), both removed from the collector. Ready: nothing open, last
        association released, idle for ``idle_s`` (or held by evidence for ``EVIDENCE_WAIT_IDLE``
        times that: ``take_incomplete``). A cut series idle that long is held instead (kept, with
        a note). Expired: held for ``held_for_s``."""
        now, wall, ready, expired = time.monotonic(), time.time(), [], []
        with self.lock:
            for key, entry in list(self.series.items()):
                if entry.open_associations:
                    continue  # still streaming: however slowly, it is not done
                if entry.held:
                    held_s = wall - (entry.held_since or wall)
                    if entry.by_evidence and held_s >= min(EVIDENCE_WAIT_IDLE * idle_s, held_for_s):
                        entry.take_incomplete = True
                        ready.append(self.series.pop(key))
                    elif held_s >= held_for_s:
                        expired.append(self.series.pop(key))
                    continue
                if now - entry.last_seen < idle_s:
                    continue
                if entry.cut:
                    message = (f"series {key}: {entry.cut}; nothing more arrived in {idle_s:g} s, so it is held "
                               "(kept, not segmented): send it again")
                    entry.hold(message)
                    log.warning("%s", message)
                    continue
                ready.append(self.series.pop(key))
        return ready, expired

    def put_back(self, entry: IncomingSeries) -> None:
        """An entry taken by ``due`` that stays (held, or waiting for a model)."""
        with self.lock:
            self.series[entry.key] = entry
