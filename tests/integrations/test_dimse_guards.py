"""What the DICOM node refuses before it keeps anything (issue 30.7a, and 30.6 for the model):
an association that calls another AE title, an instance whose Study, Series or SOP Instance
UID is not a UID ("../../x", 200 characters), and any instance while no usable production
model exists (A700: the sender tries again later). The node runs in this process, on a free
port, with nothing to send to; no series goes idle during the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import select

from spineseg.integrations.dimse import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, DicomNode
from spineseg.registry import Registry
from spineseg.store.database import open_database
from spineseg.store.models import AuditEvent
from tests.web.live_server import free_port
from tests.web.web_helpers import make_settings, register_test_model

CALLING, CALLED = "TESTSCU", "SPINESEG"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomNode]:
    settings = make_settings(tmp_path_factory.mktemp("dimse-guards"))
    register_test_model(settings)
    database = open_database(settings.sqlalchemy_url)
    services = SimpleNamespace(settings=settings, database=database, registry=Registry(settings.registry_dir),
                               queue=None)
    dicom = DicomNode(services, ae_title=CALLED, host="127.0.0.1", port=free_port(), allowed_aes=(CALLING,),
                      idle_s=3600, destination="", owner=("nobody", 0))
    dicom.start()
    try:
        yield dicom
    finally:
        dicom.stop()
        database.dispose()


def _ct(series_uid: str, **uids: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uids.get("sop", generate_uid())
    ds.StudyInstanceUID = uids.get("study", generate_uid())
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    return ds


def _associate(node: DicomNode, called: str = CALLED):
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", node.port, ae_title=called)


def _incoming(node: DicomNode) -> list[Path]:
    root = node.services.settings.data_dir / "dicom-incoming"
    return sorted(root.iterdir()) if root.is_dir() else []


def test_an_association_for_another_ae_title_is_refused_and_audited(node: DicomNode) -> None:
    assoc = _associate(node, called="OTHERNODE")
    assert not assoc.is_established and assoc.is_rejected
    assoc = _associate(node)
    assert assoc.is_established
    assoc.release()
    with node.services.database.session() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.refused")).all()
    assert [(e.target, "'OTHERNODE' is not this node's" in e.detail) for e in refused] == [(CALLING, True)]


@pytest.mark.parametrize(("bad", "uids"), [
    ("../../x", {}),
    ("1." + "2" * 198, {}),
    ("1.2.840.abc", {}),
    ("1..2", {}),
    ("", {}),
    (generate_uid(), {"sop": "../../../etc/passwd"}),
    (generate_uid(), {"study": "9" * 65}),
])
def test_an_instance_without_valid_uids_is_refused_and_nothing_is_kept(node: DicomNode, bad: str, uids: dict) -> None:
    before = _incoming(node)
    assoc = _associate(node)
    status = assoc.send_c_store(_ct(bad, **uids))
    assoc.release()
    assert int(status.Status) == CANNOT_UNDERSTAND and "not a DICOM UID" in str(status.ErrorComment)
    assert _incoming(node) == before


def test_a_valid_instance_is_kept_until_the_model_cannot_be_used(node: DicomNode) -> None:
    assoc = _associate(node)
    assert int(assoc.send_c_store(_ct(generate_uid())).Status) == SUCCESS
    assoc.release()
    assert len(_incoming(node)) == 1

    weights = node.services.settings.registry_dir / "versions" / "test-untrained" / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    try:
        assoc = _associate(node)
        status = assoc.send_c_store(_ct(generate_uid()))
        assoc.release()
        assert int(status.Status) == OUT_OF_RESOURCES and "no usable model" in str(status.ErrorComment)
        assert len(_incoming(node)) == 1
    finally:
        weights.write_bytes(original)
