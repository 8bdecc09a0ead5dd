"""A full disk (issue 30.4): with the data directory on a small filesystem uploads answered 500,
DELETE 503 (SQLite could not write the deletion and its audit row), and nothing said why. Now
new work is refused with 507 and the reason below a reserve (SPINESEG_DISK_RESERVE_MB),
deletions work and free the space, a disk that fills mid-write is 507 with nothing left behind,
and the service starts read-mostly and says so in /api/health.

The free-space probe (``resumable_uploads.free_disk_bytes``, shared with the resumable announce
check) is replaced here; ``test_real_small_filesystem`` runs ``spineseg serve`` on a real 160 MB
tmpfs in a user namespace (``unshare -Urm``), skipped where that is not allowed."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from spineseg.config import Settings
from spineseg.services import disk_room, resumable_uploads
from spineseg.services.disk_room import ROOM_BYTES, ROOM_FILE, DiskRoom
from spineseg.web import uploads as web_uploads
from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

MB = 2**20
RESERVE_MB = 100
REPO = Path(__file__).resolve().parents[2]


class Probe:
    """The free bytes the service sees; ``None``: the real disk's."""

    def __init__(self) -> None:
        self.free: int | None = None

    def __call__(self, folder: Path) -> int:
        if self.free is None:
            return shutil.disk_usage(folder).free
        return self.free


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    probe = Probe()
    patch = pytest.MonkeyPatch()
    patch.setattr(resumable_uploads, "free_disk_bytes", probe)
    yield probe
    patch.undo()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings],
        probe: Probe) -> Iterator[WebEnv]:
    settings = backends(make_settings(tmp_path_factory.mktemp("full-disk"), disk_reserve_mb=RESERVE_MB,
                                      disk_room_mb=ROOM_BYTES // MB, workers=0))
    register_test_model(settings)
    tokens = {"clinician": add_user(settings, "cleo", "clinician"),
              "researcher": add_user(settings, "rita", "researcher")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def set_free(env: WebEnv, probe: Probe, free: int | None) -> None:
    probe.free = free
    env.client.app.state.services.disk_room().forget()


@pytest.fixture
def full(env: WebEnv, probe: Probe) -> Iterator[None]:
    set_free(env, probe, 40 * MB)  # below the 100 MB reserve, above the room for deletions
    yield
    set_free(env, probe, None)


def ct_bytes() -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(np.random.default_rng(0).integers(-1000, 1000, (32, 32, 8)).astype(np.int16), np.eye(4))
    return image.to_bytes()


def upload(env: WebEnv) -> object:
    return env.client.post("/api/studies", files=[("files", ("ct.nii", ct_bytes(), "application/octet-stream"))],
                           headers=bearer(env.tokens["clinician"]))


def study_folders(env: WebEnv) -> set[str]:
    folder = env.settings.studies_dir
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_upload_on_a_full_disk_is_507_with_the_reason_and_leaves_nothing(env: WebEnv, full: None) -> None:
    before = study_folders(env)
    answer = upload(env)
    assert answer.status_code == 507, answer.text
    detail = answer.json()["detail"]
    assert "40 MB free" in detail and "100 MB are kept in reserve" in detail and "SPINESEG_DISK_RESERVE_MB" in detail
    assert "delete studies" in detail
    assert study_folders(env) == before
    assert env.client.get("/api/studies", headers=bearer(env.tokens["clinician"])).json() == []


def test_every_route_that_stores_data_refuses_on_a_full_disk(env: WebEnv, full: None) -> None:
    clinician, researcher = bearer(env.tokens["clinician"]), bearer(env.tokens["researcher"])
    refused = {
        "announce": env.client.post("/api/uploads", json={"files": [{"name": "a.zip", "size": 10}]},
                                    headers=clinician),
        "chunk": env.client.put("/api/uploads/0123456789abcdef0123456789abcdef/files/0?offset=0", content=b"x",
                                headers=clinician),
        "complete": env.client.post("/api/uploads/0123456789abcdef0123456789abcdef/complete", headers=clinician),
        "rerun": env.client.post("/api/studies/abc/rerun", json={}, headers=clinician),
        "training": env.client.post("/api/training", json={"dataset_id": "x"}, headers=researcher),
        "case": env.client.post("/api/datasets/x/cases", files=[("files", ("ct.nii", b"x", "x"))], headers=researcher),
        "case from study": env.client.post("/api/datasets/x/cases/from-study", json={"study_id": "abc"},
                                           headers=researcher),
        "model import": env.client.post("/api/models/import", files=[("files", ("m.zip", b"x", "x"))],
                                        headers=researcher),
    }
    assert {name: a.status_code for name, a in refused.items()} == {name: 507 for name in refused}
    assert all("kept in reserve" in a.json()["detail"] for a in refused.values())
    # reading still works
    assert env.client.get("/api/studies", headers=clinician).status_code == 200


def test_deletion_works_on_a_full_disk_and_frees_the_space(env: WebEnv, probe: Probe) -> None:
    headers = bearer(env.tokens["clinician"])
    made = upload(env)
    assert made.status_code == 202, made.text
    study_id = made.json()["study_id"]
    assert study_id in study_folders(env)
    set_free(env, probe, 0)  # nothing left at all
    try:
        assert upload(env).status_code == 507
        assert env.client.get(f"/api/studies/{study_id}", headers=headers).status_code == 200
        gone = env.client.delete(f"/api/studies/{study_id}", headers=headers)
        assert gone.status_code == 200, gone.text
        assert study_id not in study_folders(env)
        assert env.client.get(f"/api/studies/{study_id}", headers=headers).status_code == 404
        audit = env.client.app.state.services.database
        from sqlalchemy import text

        with audit.engine.connect() as connection:
            row = connection.execute(text("SELECT action, target, detail FROM audit_events WHERE action = 'delete' "
                                          "AND target = :t"), {"t": study_id}).one()
        assert len(row.detail) < 200  # the audit row of a deletion is small
    finally:
        set_free(env, probe, None)
    assert upload(env).status_code == 202  # space is back: work is accepted again


def test_a_disk_that_fills_mid_write_is_507_and_nothing_is_left(env: WebEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    original = web_uploads._PartWriter._part_data

    def half_then_full(self: object, data: bytes, start: int, end: int) -> None:
        original(self, data, start, start + (end - start) // 2)  # a partial file is on disk
        if getattr(self, "_handle", None) is not None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(web_uploads._PartWriter, "_part_data", half_then_full)
    before = study_folders(env)
    answer = upload(env)
    assert answer.status_code == 507, answer.text
    assert "disk of the data directory is full" in answer.json()["detail"]
    assert "nothing was kept" in answer.json()["detail"]
    assert study_folders(env) == before


def test_sqlite_full_is_507_not_a_busy_database(env: WebEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from spineseg.web.routes import api

    def full(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("DELETE ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(api, "delete_study_and_files", full)
    made = upload(env)
    assert made.status_code == 202
    answer = env.client.delete(f"/api/studies/{made.json()['study_id']}", headers=bearer(env.tokens["clinician"]))
    assert answer.status_code == 507 and "disk of the data directory is full" in answer.json()["detail"]


def test_health_says_read_mostly_and_why(env: WebEnv, probe: Probe) -> None:
    set_free(env, probe, 40 * MB)
    try:
        report = env.client.app.state.health.check_now().to_json()
        assert report["mode"] == "read-mostly" and report["status"] == "degraded"
        assert report["checks"]["disk"]["status"] == "warn"
        assert "read-mostly: 40 MB free, below the reserve of 100 MB" in report["checks"]["disk"]["detail"]
        assert env.client.get("/api/health").status_code == 200  # reachable: deletions must get through
    finally:
        set_free(env, probe, None)
    assert env.client.app.state.health.check_now().to_json()["mode"] == "normal"


def test_the_app_starts_read_mostly_on_a_full_disk_and_says_why(tmp_path: Path, probe: Probe,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path / "data", disk_reserve_mb=RESERVE_MB, disk_room_mb=ROOM_BYTES // MB, workers=0)
    register_test_model(settings)
    token = add_user(settings, "cleo", "clinician")
    probe.free = 5 * MB
    try:
        with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
            lines = [r.getMessage() for r in caplog.records if "starting read-mostly" in r.getMessage()]
            assert len(lines) == 1 and "5 MB free, below the reserve of 100 MB" in lines[0], lines
            health = client.get("/api/health")
            assert health.status_code == 200 and health.json()["mode"] == "read-mostly"
            assert "5 MB free" in health.json()["checks"]["disk"]["detail"]
            assert client.get("/", headers=bearer(token)).status_code in (200, 303)
            refused = client.post("/api/studies", files=[("files", ("ct.nii", ct_bytes(), "x"))],
                                  headers=bearer(token))
            assert refused.status_code == 507
    finally:
        probe.free = None


def test_the_room_for_deletions_is_given_up_when_full_and_made_again(tmp_path: Path, probe: Probe) -> None:
    disk = DiskRoom(tmp_path, 100 * MB, cache_s=0)
    probe.free = 10 * 2**30
    try:
        assert not disk.room().read_mostly
        room_file = tmp_path / ROOM_FILE
        assert room_file.stat().st_size == ROOM_BYTES and room_file.stat().st_blocks * 512 >= ROOM_BYTES
        probe.free = 50 * MB  # below the reserve, above the room: kept
        assert disk.room().read_mostly and room_file.exists()
        probe.free = 1 * MB  # something else filled the disk: given up, so deletions can be recorded
        assert disk.room().free == 1 * MB + ROOM_BYTES and not room_file.exists()
        probe.free = 10 * 2**30
        disk.room()
        assert room_file.exists()
    finally:
        probe.free = None
    assert disk_room.is_disk_full(OSError(errno.ENOSPC, "x")) and not disk_room.is_disk_full(OSError(errno.EIO, "x"))


SMALL_FS_SCRIPT = r"""
import json, os, subprocess, sys, time
from pathlib import Path
import httpx
sys.path.insert(0, {repo!r})
from tests.web.web_helpers import make_settings, register_test_model, add_user, bearer
from tests.web.live_server import free_port

mount = Path(sys.argv[1]); mount.mkdir(parents=True, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], check=True)
data = mount / "data"
settings = make_settings(data)
register_test_model(settings)
token = add_user(settings, "cleo", "clinician")
port = free_port(); url = f"http://127.0.0.1:{{port}}"
env = os.environ | {{"SPINESEG_DATA_DIR": str(data), "SPINESEG_SECRET_KEY": settings.secret_key,
                     "SPINESEG_DEVICE": "cpu", "SPINESEG_WORKERS": "0", "SPINESEG_DISK_RESERVE_MB": "64"}}
log = mount.parent / "server.log"

def serve():
    process = subprocess.Popen([sys.executable, "-m", "spineseg.cli.main", "serve", "--port", str(port)], env=env,
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    for _ in range(480):
        if process.poll() is not None:
            raise SystemExit("serve exited: " + log.read_text()[-3000:])
        try:
            httpx.get(url + "/api/health", timeout=1); return process
        except httpx.TransportError:
            time.sleep(0.25)
    raise SystemExit("serve did not answer")

ct = Path(sys.argv[2]).read_bytes()
def post():
    return httpx.post(url + "/api/studies", headers=bearer(token), files=[("files", ("ct.nii", ct, "x"))], timeout=60)

results = {{}}
process = serve()
first = post(); results["upload with room"] = first.status_code
study = first.json()["study_id"]
second = post().json()["study_id"]
with open(mount / "filler", "wb") as f:  # something else fills the disk to the last byte
    try:
        while True:
            f.write(b"\0" * 65536); f.flush()
    except OSError:
        pass
time.sleep(1.2)
refused = post(); results["upload when full"] = refused.status_code; results["reason"] = refused.json()["detail"]
results["leftovers"] = sorted(os.listdir(data / "studies"))
results["list when full"] = httpx.get(url + "/api/studies", headers=bearer(token)).status_code
results["delete when full"] = httpx.delete(f"{{url}}/api/studies/{{study}}", headers=bearer(token)).status_code
process.terminate(); process.wait(60)
process = serve()
health = httpx.get(url + "/api/health").json()
results["mode after restart"] = health["mode"]; results["disk after restart"] = health["checks"]["disk"]["detail"]
results["upload after restart"] = post().status_code
results["delete after restart"] = httpx.delete(f"{{url}}/api/studies/{{second}}", headers=bearer(token)).status_code
(mount / "filler").unlink()
time.sleep(1.2)
results["upload when space is back"] = post().status_code
process.terminate(); process.wait(60)
results["read-mostly lines"] = [l for l in log.read_text().splitlines() if "starting read-mostly" in l]
results["tracebacks"] = log.read_text().count("Traceback")
print(json.dumps(results))
"""


def test_real_small_filesystem(tmp_path: Path) -> None:
    """``spineseg serve`` on a real 160 MB tmpfs (mounted in a user namespace: no root needed
    where unprivileged user namespaces are allowed), filled to the last byte by another writer."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -Urm (an unprivileged user and mount namespace) is not available here")
    import nibabel as nib

    (tmp_path / "ct.nii").write_bytes(ct_bytes())
    assert nib.load(tmp_path / "ct.nii").shape == (32, 32, 8)
    script = tmp_path / "small_fs.py"
    script.write_text(SMALL_FS_SCRIPT.format(repo=str(REPO)))
    run = subprocess.run([unshare, "-Urm", sys.executable, str(script), str(tmp_path / "mnt"),
                          str(tmp_path / "ct.nii")], capture_output=True, text=True, timeout=900, cwd=REPO,
                         env=os.environ | {"PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["upload with room"] == 202
    assert results["upload when full"] == 507 and "kept in reserve" in results["reason"], results
    assert len(results["leftovers"]) == 2  # the two studies, nothing of the refused upload
    assert results["list when full"] == 200 and results["delete when full"] == 200, results
    assert results["mode after restart"] == "read-mostly", results
    assert results["upload after restart"] == 507 and results["delete after restart"] == 200, results
    assert results["upload when space is back"] == 202, results
    assert len(results["read-mostly lines"]) == 1 and results["tracebacks"] == 0, results

