"""What the DICOM listener keeps, for how long, and when a received series becomes a study
(issue 30 items 1-3), on real ``spineseg dicom-listen`` processes receiving a synthetic CT series
full of made-up patient data (``tests.imaging.phi_series``) from a pynetdicom client:

- a series streamed slowly (an association open longer than the idle time) is one study, not a
  prefix and the rest;
- a listener killed (SIGKILL) mid-series and started again holds what it had (the association
  was cut) and makes one study once the sender sends the rest;
- a series released with a hole in its slice spacing is held until the hole is filled;
- a series that cannot be segmented is removed when refused, and a held one when it expires;
- with no destination no identity is kept; with one, it is sealed (the database holds no
  patient attribute), opens with the server's key only, and is erased when it expires;
- the listener's log names series by key: no patient attribute, no original UID, ever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import select, update

from spineseg.integrations.dimse_series import HELD_NOTE, SeriesCollector
from spineseg.services.sealing import sealing_key, unseal
from spineseg.store.database import open_database
from spineseg.store.models import AuditEvent, Study
from spineseg.store.pacs_links import PacsLink
from tests.imaging.phi_series import PHI, leaks, phi_dataset, rows_text
from tests.web.live_server import free_port
from tests.web.web_helpers import TEST_SECRET_KEY, add_user, make_settings, register_test_model

pytestmark = pytest.mark.slow
CALLING, CALLED = "TESTSCU", "SPINESEG"
IDLE_S = 2
WAIT_S = 120
IDENTITY = ("name", "mrn", "birth_date", "accession", "referring", "study_description", "name-family")


@dataclass
class Listener:
    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, destination: str = "", held_hours: int = 24) -> Listener:
        env = os.environ | {"SPINESEG_DATA_DIR": str(self.data_dir), "SPINESEG_SECRET_KEY": TEST_SECRET_KEY,
                            "SPINESEG_DEVICE": "cpu", "SPINESEG_DISK_RESERVE_MB": "64", "SPINESEG_DISK_ROOM_MB": "1",
                            "SPINESEG_DICOM_HELD_HOURS": str(held_hours)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spineseg.cli.main", "dicom-listen", "--ae-title", CALLED, "--port",
                 str(self.port), "--allow", CALLING, "--idle-s", str(IDLE_S), "--owner", "pacs-node",
                 "--destination", destination], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._echo():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.3)
        return self

    def _echo(self) -> bool:
        ae = AE(ae_title=CALLING)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=CALLED)
        established = assoc.is_established
        if established:
            assoc.release()
        return established

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    root = tmp_path_factory.mktemp("dimse-lifecycle")
    settings = make_settings(root / "data")
    register_test_model(settings)
    add_user(settings, "pacs-node", "clinician")
    node = Listener(settings.data_dir, root / "listener.log")
    try:
        yield node
    finally:
        node.stop()


def series(tag: str, count: int = 12, **changes: object) -> list[Dataset]:
    """The PHI series with UIDs of its own (``tag``: digits)."""
    root = "1.2.826.0.1.3680043.8.498."
    uids = {"study_uid": f"{root}111{tag}", "series_uid": f"{root}222{tag}", "frame_uid": f"{root}333{tag}"}
    datasets = []
    for index in range(count):
        ds = phi_dataset(index, patient=uids)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{root}444{tag}.{index + 1}"
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        datasets.append(ds)
    return datasets


def associate(node: Listener):
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=CALLED)
    assert assoc.is_established
    return assoc


def send(node: Listener, datasets: list[Dataset], *, end: str = "release") -> None:
    assoc = associate(node)
    assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * len(datasets)
    assoc.abort() if end == "abort" else assoc.release()


def folder_of(node: Listener, datasets: list[Dataset]) -> Path:
    return node.data_dir / "dicom-incoming" / SeriesCollector.key(CALLING, str(datasets[0].SeriesInstanceUID))


def studies(node: Listener) -> dict[str, int]:
    """study id -> instances stored, for every study."""
    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        ids = list(session.scalars(select(Study.id)))
    database.dispose()
    return {i: len(list((node.data_dir / "studies" / i / "input" / "series").glob("*.dcm"))) for i in ids}


def wait_for(what, message: str, node: Listener):
    deadline = time.monotonic() + WAIT_S
    while not (found := what()):
        assert time.monotonic() < deadline, f"{message}:\n{node.log()[-3000:]}"
        time.sleep(0.5)
    return found


def new_study(node: Listener, before: dict[str, int]) -> tuple[str, int]:
    [(study_id, count)] = wait_for(lambda: [s for s in studies(node).items() if s[0] not in before],
                                   "no study was made", node)
    return study_id, count


def link_of(node: Listener, study_id: str) -> PacsLink:
    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        link = session.get(PacsLink, study_id)
        session.expunge(link)
    database.dispose()
    return link


def audit(node: Listener, action: str) -> list[str]:
    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        found = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.action == action))]
    database.dispose()
    return found


def test_the_listener_keeps_only_whole_series_and_only_while_needed(listener: Listener) -> None:
    listener.start()  # no destination
    # a series streamed slowly: the association stays open longer than the idle time
    slow = series("1")
    assoc = associate(listener)
    assert [int(assoc.send_c_store(ds).Status) for ds in slow[:4]] == [0] * 4
    time.sleep(IDLE_S * 2 + 1)
    assert studies(listener) == {}, "a prefix of a series still streaming became a study"
    assert [int(assoc.send_c_store(ds).Status) for ds in slow[4:]] == [0] * 8
    assoc.release()
    slow_study, count = new_study(listener, {})
    assert count == 12
    assert link_of(listener, slow_study).return_header is None  # no destination: no identity kept

    # a series whose association is dropped is held; it will expire
    dropped = series("2")
    send(listener, dropped[:5], end="abort")
    wait_for(lambda: (folder_of(listener, dropped) / HELD_NOTE).is_file(), "the dropped series was not held", listener)

    # kill -9 in the middle of a series: the association is cut with the process
    killed = series("3")
    assoc = associate(listener)
    assert [int(assoc.send_c_store(ds).Status) for ds in killed[:6]] == [0] * 6
    listener.stop(signal.SIGKILL)
    assoc.abort()
    assert len(list(folder_of(listener, killed).glob("*.dcm"))) == 6

    # a row written before sealing (plain attributes), and a held series past its time
    database = open_database(f"sqlite:///{listener.data_dir / 'spineseg.db'}")
    with database.session() as session:
        session.get(PacsLink, slow_study).return_header = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "X^Y"}]}}
    database.dispose()
    two_hours_ago = time.time() - 7200
    os.utime(folder_of(listener, dropped) / HELD_NOTE, (two_hours_ago, two_hours_ago))

    destination = f"PACS@127.0.0.1:{free_port()}"  # nothing listens there: every send fails
    listener.start(destination=destination, held_hours=1)
    wait_for(lambda: not folder_of(listener, dropped).exists(), "the expired held series was not removed", listener)
    assert any("held for 1 h and never completed by the sender" in d for d in audit(listener, "dicom.refused"))
    legacy = link_of(listener, slow_study).return_header
    assert isinstance(legacy, str) and unseal(sealing_key(make_settings(listener.data_dir)), legacy) == {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "X^Y"}]}}

    held = wait_for(lambda: (folder_of(listener, killed) / HELD_NOTE).is_file(), "the cut series was not held",
                    listener)
    assert held and "the listener stopped while an association" in (folder_of(listener, killed) / HELD_NOTE).read_text()
    assert set(studies(listener)) == {slow_study}
    before = studies(listener)
    send(listener, killed[6:])  # the sender sends the rest
    killed_study, count = new_study(listener, before)
    assert count == 12, "a series split by kill -9 became more than one study"

    # with a destination the identity is kept, sealed: no patient attribute in any row
    link = link_of(listener, killed_study)
    assert isinstance(link.return_header, str) and link.return_header_expires_at is not None
    opened = pydicom.Dataset.from_json(unseal(sealing_key(make_settings(listener.data_dir)), link.return_header))
    assert str(opened.PatientName) == PHI["name"] and opened.PatientID == PHI["mrn"]
    rows = rows_text(f"sqlite:///{listener.data_dir / 'spineseg.db'}")
    assert [k for k in leaks(rows.encode()) if k in IDENTITY] == []

    # a hole in the slice spacing: held, though released and idle, until it is filled
    gapped = series("4")
    before = studies(listener)
    send(listener, gapped[:4] + gapped[8:])
    wait_for(lambda: (folder_of(listener, gapped) / HELD_NOTE).is_file(), "the gapped series was not held", listener)
    assert "about 4 slice(s) are missing" in (folder_of(listener, gapped) / HELD_NOTE).read_text()
    assert studies(listener) == before
    send(listener, gapped[4:8])
    assert new_study(listener, before)[1] == 12

    # a series that cannot be segmented (no pixels) is refused and its raw files removed
    empty = series("5", count=3)
    for ds in empty:
        del ds.PixelData
    before = studies(listener)
    send(listener, empty)
    wait_for(lambda: audit(listener, "dicom.refused")[1:], "the unusable series was not refused", listener)
    assert not folder_of(listener, empty).exists() and studies(listener) == before

    # the identity expires unsent: erased, audited, the reason recorded
    database = open_database(f"sqlite:///{listener.data_dir / 'spineseg.db'}")
    with database.session() as session:
        session.execute(update(PacsLink).where(PacsLink.study_id == killed_study)
                        .values(return_header_expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    database.dispose()
    wait_for(lambda: link_of(listener, killed_study).return_header is None, "the header did not expire", listener)
    assert "expired before the result could be sent" in link_of(listener, killed_study).send_error
    assert audit(listener, "pacs.identity_expired")

    listener.stop()
    log = listener.log()
    assert "series" in log and [k for k in leaks(log.encode())] == [], log[-3000:]


def test_a_series_with_a_hole_nobody_fills_is_taken_in_after_its_evidence_hold(tmp_path: Path) -> None:
    """In this process: a node with a short idle time, a real (not started) queue."""
    from types import SimpleNamespace

    from spineseg.integrations.dimse import DicomNode
    from spineseg.integrations.dimse_series import EVIDENCE_WAIT_IDLE, INCOMPLETE
    from spineseg.jobs.queue import JobQueue
    from spineseg.registry import Registry

    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    add_user(settings, "pacs-node", "clinician")
    database = open_database(settings.sqlalchemy_url)
    registry = Registry(settings.registry_dir)
    services = SimpleNamespace(settings=settings, database=database, registry=registry,
                               queue=JobQueue(settings, database, registry))
    idle_s = 0.2
    node = DicomNode(services, ae_title=CALLED, host="127.0.0.1", port=free_port(), allowed_aes=(CALLING,),
                     idle_s=idle_s, destination="", owner=("pacs-node", 1))
    node.start()
    try:
        target = Listener(settings.data_dir, tmp_path / "unused.log", port=node.port)
        gapped = series("6")
        send(target, gapped[:4] + gapped[8:])
        note = folder_of(target, gapped) / HELD_NOTE
        wait_for(note.is_file, "the series with a hole was not held", target)
        assert note.read_text().startswith(INCOMPLETE) and studies(target) == {}
        started = time.monotonic()
        [(_study, count)] = wait_for(lambda: list(studies(target).items()), "it was never taken in", target)
        waited = time.monotonic() - started
        assert count == 8 and EVIDENCE_WAIT_IDLE * idle_s - 1 < waited < EVIDENCE_WAIT_IDLE * idle_s + 5
        assert not folder_of(target, gapped).exists()
    finally:
        node.stop()
        database.dispose()
