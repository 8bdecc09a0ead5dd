"""The DICOM network round trip: a real ``spineseg dicom-listen`` process receives the thorax
series by C-STORE from a pynetdicom test client, makes a study and a job of it once the series
is idle, segments it with the shipped model on CPU and sends the SEG by C-STORE to a real
Orthanc that holds the original series. Also: an AE title not allowed is refused, a series
that is not CT is refused at negotiation, a dropped association holds the partial series
(kept, not segmented) until the sender sends it again, a destination down when the SEG is
ready gets it on a later try."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification
from sqlalchemy import select

from spineseg.integrations.dimse_series import SeriesCollector
from spineseg.store.database import open_database
from spineseg.store.models import AuditEvent, Study
from spineseg.store.pacs_links import PacsLink
from tests.integrations.orthanc import AE_TITLE, Orthanc, orthanc_available
from tests.integrations.sent_results import SPINE_SEG, check_sent_report, sends_the_report, sent_results
from tests.integrations.thorax import PATIENT_ID, SERIES_UID, STUDY_UID, pacs_copy
from tests.web.live_server import free_port
from tests.web.web_helpers import TEST_SECRET_KEY, add_user, make_settings

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
CALLING_AE = "TESTSCU"
IDLE_S = 3
SEG_TIMEOUT_S = 300


@dataclass
class Node:
    orthanc: Orthanc
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    ct_files: list[Path]
    mr_files: list[Path]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _echo(port: int, calling: str = CALLING_AE) -> tuple[bool, int | None]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINESEG")
    if not assoc.is_established:
        return False, None
    status = assoc.send_c_echo()
    assoc.release()
    return True, int(status.Status) if status else None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    why = orthanc_available()
    if why:
        pytest.skip(why)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cases"
    if not (shared / "ts-dicom-thorax" / "dicom").is_dir():
        pytest.skip(f"{shared} is absent")
    root = tmp_path_factory.mktemp("dimse")
    ct_files = pacs_copy(shared, root / "ct")
    mr_files = pacs_copy(shared, root / "mr", modality="MR", series_uid=SERIES_UID + ".9", limit=1)
    orthanc = Orthanc(root / "orthanc").start()
    data_dir = root / "data"
    settings = make_settings(data_dir)
    add_user(settings, "pacs-node", "clinician")
    port = free_port()
    log_path = root / "listener.log"
    env = os.environ | {"SPINESEG_DATA_DIR": str(data_dir), "SPINESEG_SECRET_KEY": TEST_SECRET_KEY,
                        "SPINESEG_DEVICE": "cpu"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "spineseg.cli.main", "dicom-listen", "--ae-title", "SPINESEG", "--port", str(port),
             "--allow", CALLING_AE, "--idle-s", str(IDLE_S), "--owner", "pacs-node",
             "--destination", f"{AE_TITLE}@127.0.0.1:{orthanc.dicom_port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _echo(port)[0]:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dicom-listen did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
        orthanc.upload_folder(ct_files[0].parent)  # the PACS holds the original series
        yield Node(orthanc, process, port, data_dir, log_path, ct_files, mr_files)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        orthanc.stop()


def _studies(data_dir: Path) -> list[tuple[str, str]]:
    database = open_database(f"sqlite:///{data_dir / 'spineseg.db'}")
    with database.session() as session:
        found = [(s.id, s.latest_job.status if s.latest_job else "none") for s in session.scalars(select(Study))]
    database.dispose()
    return found


def _send(port: int, files: list[Path], *, abort: bool = False, sop_class=CTImageStorage) -> list[int]:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(sop_class, [pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINESEG")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(pydicom.dcmread(path)).Status) for path in files]
    assoc.abort() if abort else assoc.release()
    return statuses


def test_echo_and_refusals(node: Node) -> None:
    assert _echo(node.port) == (True, 0x0000)
    assert _echo(node.port, calling="INTRUDER") == (False, None)
    assert "association from AE 'INTRUDER' (127.0.0.1) refused: not one of the allowed AE titles TESTSCU" in node.log()
    # a series that is not CT: its storage class is not accepted at negotiation, nothing is stored
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(MRImageStorage, [pydicom.dcmread(node.mr_files[0]).file_meta.TransferSyntaxUID])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SPINESEG")
    assert assoc.is_established
    assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
    with pytest.raises(ValueError, match="No presentation context for 'MR Image Storage'"):
        assoc.send_c_store(pydicom.dcmread(node.mr_files[0]))
    assoc.release()
    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.refused")).all()
        assert [e.target for e in refused] == ["INTRUDER"]
    database.dispose()


def test_dropped_association_is_held_then_the_full_series_is_segmented_and_sent(node: Node) -> None:
    before = node.orthanc.count()
    assert _send(node.port, node.ct_files[:10], abort=True) == [0] * 10
    time.sleep(IDLE_S + 3)
    key = SeriesCollector.key(CALLING_AE, SERIES_UID)  # the log names the series by key, never by its UID
    held = (f"series {key}: the association from AE {CALLING_AE} was dropped after 10 instance(s); nothing more "
            f"arrived in {IDLE_S} s, so it is held (kept, not segmented): send it again")
    assert held in node.log() and SERIES_UID not in node.log()
    assert _studies(node.data_dir) == []
    incoming = list((node.data_dir / "dicom-incoming").iterdir())
    assert len(incoming) == 1 and len(list(incoming[0].glob("*.dcm"))) == 10  # nothing lost

    started = time.monotonic()
    assert _send(node.port, node.ct_files) == [0] * 20  # the sender sends the series again, whole
    node.orthanc.stop()  # the destination is down when the result is ready: it is kept and sent later
    deadline = time.monotonic() + SEG_TIMEOUT_S
    while "result not sent (tried again in 5 s)" not in node.log():
        assert time.monotonic() < deadline, f"the send was never tried:\n{node.log()[-3000:]}"
        time.sleep(1)
    unsent = (f"destination AE {AE_TITLE} at 127.0.0.1:{node.orthanc.dicom_port} did not accept an association "
              "(is it running, does it know our AE title?)")
    assert unsent in node.log()
    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        [link] = session.scalars(select(PacsLink)).all()
        assert link.send_error == unsent and link.sent_job_id is None
        assert isinstance(link.return_header, str) and PATIENT_ID not in link.return_header  # sealed
    database.dispose()
    node.orthanc.start()
    while (sent_count := re.search(r"result sent to ORTHANC \((\d+) instance", node.log())) is None:
        assert time.monotonic() < deadline, f"no result reached Orthanc:\n{node.log()[-3000:]}"
        assert node.process.poll() is None, node.log()
        time.sleep(1)
    took = time.monotonic() - started
    after = node.orthanc.count()
    print(f"\nOrthanc before: {before}\nOrthanc after:  {after}\nC-STORE in -> SEG in Orthanc: {took:.1f} s "
          f"(the destination down for the first try)\nunsent: {unsent}")
    assert after["CountInstances"] == before["CountInstances"] + int(sent_count.group(1))
    assert after["CountStudies"] == before["CountStudies"] and after["CountPatients"] == before["CountPatients"]
    [(study_id, status)] = _studies(node.data_dir)
    assert status == "done"
    assert not list((node.data_dir / "dicom-incoming").iterdir())  # taken in, then removed
    stored = sorted((node.data_dir / "studies" / study_id / "input" / "series").glob("*.dcm"))
    assert len(stored) == 20
    assert all(pydicom.dcmread(p, stop_before_pixels=True).PatientID != PATIENT_ID for p in stored)

    with node.orthanc.client() as orthanc:
        sent = sent_results(orthanc)
    assert sends_the_report([str(ds.Modality) for ds in sorted(sent.values(), key=lambda d: d.Modality != "SEG")])
    seg = sent[SPINE_SEG]
    [summary_path] = (node.data_dir / "studies" / study_id / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    print(f"measurement SR read back from Orthanc: {check_sent_report(sent, summary, summary['model_version'])} "
          "numbers equal to the run's summary")
    assert seg.StudyInstanceUID == STUDY_UID and seg.PatientID == PATIENT_ID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 20

    database = open_database(f"sqlite:///{node.data_dir / 'spineseg.db'}")
    with database.session() as session:
        link = session.get(PacsLink, study_id)
        assert link.origin == "dimse" and link.endpoint == CALLING_AE and link.sent_job_id is not None
        assert link.return_header is None  # the original's patient attributes are erased once sent
        sends = session.scalars(select(AuditEvent).where(AuditEvent.action == "pacs.send")).all()
        assert [e.target for e in sends] == [study_id]
    database.dispose()
