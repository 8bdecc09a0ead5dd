"""Resumable uploads end to end on the real app (``/api/uploads``), and the chunk writer."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nibabel as nib
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect

from spineseg.services.resumable_uploads import MAX_FILES, sweep_uploads
from spineseg.store.database import open_database
from spineseg.store.models import Upload
from spineseg.web.app import create_app
from spineseg.web.chunks import ChunkStalled, OffsetConflict, append_chunk
from spineseg.web.uploads import UploadRefused
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

CHUNK = 4096


@pytest.fixture(scope="module")
def nifti(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The phantom CT as an uncompressed ``ct.nii`` (184 kB: many chunks) and its truth (.nii.gz)."""
    folder = tmp_path_factory.mktemp("phantom")
    _ct_gz, truth = phantom_nifti(folder)
    image = nib.load(str(folder / "ct.nii.gz"))
    nib.save(image, str(folder / "ct.nii"))
    return (folder / "ct.nii").read_bytes(), truth


def start(client: TestClient, token: str, files: list[tuple[str, int]], truth: tuple[str, int] | None = None,
          expect: int = 201) -> dict:
    body = {"files": [{"name": n, "size": s} for n, s in files],
            "truth": {"name": truth[0], "size": truth[1]} if truth else None, "purpose": "study"}
    response = client.post("/api/uploads", json=body, headers=bearer(token))
    assert response.status_code == expect, response.text
    return response.json()


def put(client: TestClient, token: str, upload_id: str, index: int, offset: int, data: bytes):
    return client.put(f"/api/uploads/{upload_id}/files/{index}", params={"offset": offset}, content=data,
                      headers=bearer(token) | {"Content-Type": "application/octet-stream"})


def send_file(client: TestClient, token: str, upload_id: str, index: int, data: bytes, offset: int = 0,
              chunk: int = CHUNK) -> None:
    while offset < len(data):
        response = put(client, token, upload_id, index, offset, data[offset:offset + chunk])
        assert response.status_code == 200, response.text
        offset = response.json()["received"]


def complete(client: TestClient, token: str, upload_id: str):
    return client.post(f"/api/uploads/{upload_id}/complete", headers=bearer(token))


def test_chunks_in_order_become_a_segmented_study(web_env: WebEnv, nifti: tuple[bytes, bytes]) -> None:
    token, (ct, truth) = web_env.tokens["clinician"], nifti
    upload = start(web_env.client, token, [("ct.nii", len(ct))], ("truth.nii.gz", len(truth)))
    assert [(f["index"], f["role"], f["received"]) for f in upload["files"]] == [(0, "ct", 0), (1, "truth", 0)]
    assert upload["total_bytes"] == len(ct) + len(truth) and upload["status"] == "uploading"
    send_file(web_env.client, token, upload["upload_id"], 0, ct)
    send_file(web_env.client, token, upload["upload_id"], 1, truth)
    response = complete(web_env.client, token, upload["upload_id"])
    assert response.status_code == 202, response.text
    ids = response.json()
    assert response.headers["location"] == f"/api/jobs/{ids['job_id']}"
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    assert study["name"] == f"Study {study['id'][:8]}" and study["has_truth"] and study["metrics"] is not None
    # Completing again (a client that lost the 202) answers with the same ids; nothing is left on disk.
    again = complete(web_env.client, token, upload["upload_id"])
    assert again.status_code == 202 and again.json() == ids
    assert not (web_env.settings.uploads_dir / upload["upload_id"]).exists()


def test_an_interrupted_upload_resumes_from_the_offsets_get_reports(web_env: WebEnv, nifti) -> None:
    token, (ct, _truth) = web_env.tokens["clinician"], nifti
    upload_id = start(web_env.client, token, [("ct.nii", len(ct))])["upload_id"]
    for offset in (0, CHUNK):  # two chunks, then the "connection breaks"
        assert put(web_env.client, token, upload_id, 0, offset, ct[offset:offset + CHUNK]).status_code == 200
    state = web_env.client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).json()
    assert state["files"][0]["received"] == 2 * CHUNK and state["received_bytes"] == 2 * CHUNK
    early = complete(web_env.client, token, upload_id)
    assert early.status_code == 409 and f"has {2 * CHUNK} of {len(ct)} bytes" in early.json()["detail"]
    send_file(web_env.client, token, upload_id, 0, ct, offset=state["files"][0]["received"])
    response = complete(web_env.client, token, upload_id)
    assert response.status_code == 202, response.text


def test_a_chunk_at_the_wrong_offset_gets_409_with_the_servers_offset(web_env: WebEnv, nifti) -> None:
    token, (ct, _truth) = web_env.tokens["clinician"], nifti
    upload_id = start(web_env.client, token, [("ct.nii", len(ct))])["upload_id"]
    assert put(web_env.client, token, upload_id, 0, 0, ct[:CHUNK]).status_code == 200
    for wrong in (0, 3 * CHUNK):  # a repeat of the chunk just sent, and one past a gap
        response = put(web_env.client, token, upload_id, 0, wrong, ct[wrong:wrong + CHUNK])
        assert response.status_code == 409, response.text
        assert response.json()["received"] == CHUNK and response.headers["upload-offset"] == str(CHUNK)
        assert response.json()["field"] == "offset" and "offset=4096" in response.json()["detail"]
    past_end = put(web_env.client, token, upload_id, 0, CHUNK, b"x" * len(ct))
    assert past_end.status_code == 400 and "past the file's size" in past_end.json()["detail"]
    assert put(web_env.client, token, upload_id, 5, 0, b"x").status_code == 404
    assert web_env.client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).json()["received_bytes"] == CHUNK
    assert web_env.client.delete(f"/api/uploads/{upload_id}", headers=bearer(token)).json() == {"deleted": upload_id}
    assert not (web_env.settings.uploads_dir / upload_id).exists()
    assert web_env.client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).status_code == 404


def test_another_users_upload_is_not_found(web_env: WebEnv, nifti) -> None:
    owner, other = web_env.tokens["clinician"], web_env.tokens["researcher"]
    ct = nifti[0]
    upload_id = start(web_env.client, owner, [("ct.nii", len(ct))])["upload_id"]
    path = f"/api/uploads/{upload_id}"
    assert web_env.client.get(path, headers=bearer(other)).status_code == 404
    assert put(web_env.client, other, upload_id, 0, 0, ct[:CHUNK]).status_code == 404
    assert web_env.client.post(f"{path}/complete", headers=bearer(other)).status_code == 404
    assert web_env.client.delete(path, headers=bearer(other)).status_code == 404
    assert web_env.client.get(path, headers=bearer(owner)).json()["received_bytes"] == 0
    viewer = web_env.client.post("/api/uploads", json={"files": [{"name": "a.nii", "size": 1}]},
                                 headers=bearer(web_env.tokens["viewer"]))
    assert viewer.status_code == 403
    assert web_env.client.delete(path, headers=bearer(owner)).status_code == 200


def test_too_large_or_too_many_files_are_refused_with_413(web_env: WebEnv) -> None:
    token, limit = web_env.tokens["clinician"], web_env.settings.max_upload_bytes
    body = start(web_env.client, token, [("a.dcm", limit // 2), ("b.dcm", limit // 2 + 1)], expect=413)
    assert "SPINESEG_MAX_UPLOAD_MB" in body["detail"] and body["field"] == "files"
    body = start(web_env.client, token, [("ct.nii", limit)], ("truth.nii", 1), expect=413)
    assert str(limit + 1) in body["detail"]
    body = start(web_env.client, token, [(f"{i}.dcm", 1) for i in range(MAX_FILES + 1)], expect=413)
    assert f"at most {MAX_FILES}" in body["detail"]
    body = start(web_env.client, token, [("a.dcm", -1)], expect=422)
    assert "files.0.size" in body["detail"]


def test_complete_with_a_bad_file_is_422_naming_it_and_leaves_nothing(web_env: WebEnv) -> None:
    token = web_env.tokens["clinician"]
    studies_before = set(os.listdir(web_env.settings.studies_dir))
    bad = b"not a nifti at all"
    upload_id = start(web_env.client, token, [("scan.nii.gz", len(bad))])["upload_id"]
    send_file(web_env.client, token, upload_id, 0, bad)
    response = complete(web_env.client, token, upload_id)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "files" and body["source"] == "scan.nii.gz"
    assert str(web_env.settings.data_dir) not in body["detail"]
    assert web_env.client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).status_code == 404
    assert not (web_env.settings.uploads_dir / upload_id).exists()
    assert set(os.listdir(web_env.settings.studies_dir)) == studies_before


def _comparable(study: dict) -> dict:
    # timings differ from run to run; the exports still pending depend on when the summary is read
    summary = {k: v for k, v in study["summary"].items()
               if k not in ("source", "timings_s", "stage_times_s", "outputs_pending")}
    return {k: study[k] for k in ("input_kind", "has_truth", "owner", "model_id", "spine_volume_ml",
                                  "dice", "metrics")} | {"summary": summary,
                                                         "name": study["name"].replace(study["id"][:8], "<id>")}


def _input_files(settings, study_id: str) -> dict[str, bytes]:
    root = settings.studies_dir / study_id
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "runs" not in p.parts and "viewer" not in p.parts  # outputs and the viewer's cache
            and p.name != "intake_times.json"}  # the upload's stage seconds


def test_the_study_complete_makes_equals_the_one_post_studies_makes(web_env: WebEnv, nifti) -> None:
    token, (ct, truth) = web_env.tokens["clinician"], nifti
    direct = web_env.client.post("/api/studies", headers=bearer(token),
                                 files=[("files", ("ct.nii", ct)), ("truth", ("truth.nii.gz", truth))])
    assert direct.status_code == 202, direct.text
    upload_id = start(web_env.client, token, [("ct.nii", len(ct))], ("truth.nii.gz", len(truth)))["upload_id"]
    send_file(web_env.client, token, upload_id, 0, ct, chunk=len(ct))
    send_file(web_env.client, token, upload_id, 1, truth, chunk=1000)
    resumed = complete(web_env.client, token, upload_id)
    assert resumed.status_code == 202, resumed.text
    studies = []
    for ids in (direct.json(), resumed.json()):
        assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
        studies.append(web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json())
    assert _comparable(studies[0]) == _comparable(studies[1])
    assert (_input_files(web_env.settings, direct.json()["study_id"])
            == _input_files(web_env.settings, resumed.json()["study_id"]))


def test_an_upload_survives_a_server_restart_and_idle_ones_are_swept(tmp_path: Path, nifti) -> None:
    settings = make_settings(tmp_path / "data", upload_stale_hours=24)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    ct = nifti[0]
    with TestClient(create_app(settings)) as client:
        upload_id = start(client, token, [("ct.nii", len(ct))])["upload_id"]
        idle_id = start(client, token, [("other.nii.gz", 10)])["upload_id"]
        assert put(client, token, upload_id, 0, 0, ct[:CHUNK]).status_code == 200
    debris = settings.uploads_dir / ("ab" * 16)  # a folder a crash left without a row
    debris.mkdir()
    database = open_database(settings.sqlalchemy_url)
    with database.session() as session:
        session.execute(update(Upload).where(Upload.id == idle_id)
                        .values(updated_at=datetime.now(UTC) - timedelta(hours=25)))
    database.dispose()

    with TestClient(create_app(settings)) as client:  # a new server on the same data directory
        assert not debris.exists() and not (settings.uploads_dir / idle_id).exists()
        assert client.get(f"/api/uploads/{idle_id}", headers=bearer(token)).status_code == 404
        state = client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).json()
        assert state["files"][0]["received"] == CHUNK
        send_file(client, token, upload_id, 0, ct, offset=CHUNK)
        response = complete(client, token, upload_id)
        assert response.status_code == 202, response.text
        assert wait_for_job(WebEnv(settings, client, {}), response.json()["job_id"], token)["status"] == "done"


def test_a_completion_that_fails_for_another_reason_keeps_the_files(tmp_path: Path, nifti, monkeypatch) -> None:
    """A database error while recording the study is not the files' fault: the parts stay and
    ``complete`` can be asked again (the study is then made once)."""
    import spineseg.services.resumable_uploads as resumable

    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    ct = nifti[0]
    real_accept = resumable.accept_study
    calls = []

    def accept_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT INTO studies", {}, Exception("database is locked"))
        return real_accept(*args, **kwargs)

    monkeypatch.setattr(resumable, "accept_study", accept_failing_once)
    with TestClient(create_app(settings)) as client:
        upload_id = start(client, token, [("ct.nii", len(ct))])["upload_id"]
        send_file(client, token, upload_id, 0, ct)
        first = complete(client, token, upload_id)
        assert first.status_code == 503, first.text
        state = client.get(f"/api/uploads/{upload_id}", headers=bearer(token)).json()
        assert state["status"] == "uploading" and state["files"][0]["received"] == len(ct)
        assert list((settings.studies_dir).glob("*")) == []
        second = complete(client, token, upload_id)
        assert second.status_code == 202, second.text
        assert complete(client, token, upload_id).json() == second.json()
        studies = client.get("/api/studies", headers=bearer(token)).json()
        assert [s["id"] for s in studies] == [second.json()["study_id"]]


def test_a_completion_cut_off_by_a_stop_is_resolved_at_the_next_start(tmp_path: Path, nifti) -> None:
    from spineseg.store.uploads import begin_completion

    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    ct = nifti[0]
    with TestClient(create_app(settings)) as client:
        cut_off = start(client, token, [("ct.nii", len(ct))])["upload_id"]
        send_file(client, token, cut_off, 0, ct)
    database = open_database(settings.sqlalchemy_url)
    with database.session() as session:  # the server stopped after claiming the completion
        assert begin_completion(session, upload_id=cut_off, study_id="cd" * 16)
    database.dispose()
    (settings.studies_dir / ("cd" * 16) / "input").mkdir(parents=True)  # its half-made study folder

    with TestClient(create_app(settings)) as client:
        state = client.get(f"/api/uploads/{cut_off}", headers=bearer(token)).json()
        assert state["status"] == "uploading" and state["files"][0]["received"] == len(ct)
        assert not (settings.studies_dir / ("cd" * 16)).exists()
        response = complete(client, token, cut_off)
        assert response.status_code == 202, response.text


def test_sweep_removes_uploads_idle_past_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    with TestClient(create_app(settings)) as client:
        upload_id = start(client, token, [("ct.nii.gz", 100)])["upload_id"]
        database = client.app.state.services.database
        assert sweep_uploads(database, settings.uploads_dir, stale_hours=1) == []
        later = datetime.now(UTC) + timedelta(hours=2)
        assert sweep_uploads(database, settings.uploads_dir, stale_hours=1, now=later) == [upload_id]
        assert not (settings.uploads_dir / upload_id).exists()


# --- the chunk writer on its own ------------------------------------------------------------

async def _pieces(parts: list[bytes], *, then: BaseException | None = None, pause_s: float = 0.0
                  ) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if pause_s:
        await asyncio.sleep(pause_s)
    if then is not None:
        raise then


@pytest.fixture
def part(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "0.part"


def test_bytes_before_a_broken_connection_are_kept(part: Path) -> None:
    with pytest.raises(ChunkStalled) as info:
        asyncio.run(append_chunk(part, _pieces([b"abc", b"def"], then=ClientDisconnect()), offset=0, size=100,
                                 declared_bytes=10))
    assert info.value.received == 6 and part.read_bytes() == b"abcdef"
    assert asyncio.run(append_chunk(part, _pieces([b"gh"]), offset=6, size=100, declared_bytes=2)) == 8


def test_a_body_that_stalls_is_cut_off_after_the_idle_timeout(part: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ChunkStalled) as info:
        asyncio.run(append_chunk(part, _pieces([b"abcd"], pause_s=5), offset=0, size=100, declared_bytes=None,
                                 idle_s=0.2))
    assert time.monotonic() - started < 3
    assert info.value.received == 4 and "no data for" in info.value.message


def test_chunks_over_the_cap_are_refused_and_nothing_past_it_is_written(part: Path) -> None:
    with pytest.raises(UploadRefused) as info:
        asyncio.run(append_chunk(part, _pieces([b"x" * 10]), offset=0, size=100, declared_bytes=10, max_bytes=8))
    assert info.value.status == 413 and not part.exists()
    with pytest.raises(UploadRefused):  # no Content-Length: counted as it arrives
        asyncio.run(append_chunk(part, _pieces([b"x" * 6, b"x" * 6]), offset=0, size=100, declared_bytes=None,
                                 max_bytes=8))
    assert part.read_bytes() == b"x" * 6


def test_two_chunks_of_one_file_cannot_interleave(part: Path) -> None:
    async def race() -> tuple[int, BaseException | int]:
        first = asyncio.create_task(append_chunk(part, _pieces([b"a" * 4], pause_s=0.3), offset=0, size=100,
                                                 declared_bytes=None))
        await asyncio.sleep(0.1)  # the first holds the lock, waiting for more of its body
        try:
            second: BaseException | int = await append_chunk(part, _pieces([b"b" * 4]), offset=0, size=100,
                                                             declared_bytes=4)
        except OffsetConflict as exc:
            second = exc
        return await first, second

    first, second = asyncio.run(race())
    assert first == 4 and isinstance(second, OffsetConflict) and "being written" in second.message
    assert part.read_bytes() == b"a" * 4


def test_the_openapi_document_describes_the_resumable_api(web_env: WebEnv) -> None:
    paths = web_env.client.get("/openapi.json", headers=bearer(web_env.tokens["viewer"])).json()["paths"]
    put_chunk = paths["/api/uploads/{upload_id}/files/{index}"]["put"]
    assert "application/octet-stream" in put_chunk["requestBody"]["content"]
    assert {"409", "408"} <= set(put_chunk["responses"])
    for path, method in (("/api/uploads", "post"), ("/api/uploads/{upload_id}", "get"),
                         ("/api/uploads/{upload_id}", "delete"), ("/api/uploads/{upload_id}/complete", "post")):
        assert paths[path][method]["summary"], (path, method)
