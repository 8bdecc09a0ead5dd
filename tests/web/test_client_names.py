"""Client file and folder names are not kept (issue 30 item 2), on the real app: a zip named after
the patient whose entries sit in a folder named after the patient (a multipart upload), and the
same series as files announced under such names (a resumable upload). Searched afterwards:
every row of every table, the database file itself, every path under the data directory, and
every log record the service wrote (which must also carry none of the series' identifiers:
the original UIDs included, as the log is read before de-identification)."""

from __future__ import annotations

import io
import logging
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.web.app import create_app
from tests.imaging.phi_series import FILE_NAME, leaks, rows_text, write_phi_series
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    settings = make_settings(tmp_path_factory.mktemp("client-names"))
    register_test_model(settings)
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, {"clinician": add_user(settings, "clinician", "clinician")})


def _database_file_bytes(env: WebEnv) -> bytes:
    """The SQLite file after a checkpoint (the write-ahead log folded in and emptied)."""
    path = env.settings.data_dir / "spineseg.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path.read_bytes()


def _announce_and_send(env: WebEnv, token: str, paths: list[Path]) -> dict:
    names = [f"{FILE_NAME}/{path.name}" for path in paths]
    body = {"files": [{"name": n, "size": p.stat().st_size} for n, p in zip(names, paths, strict=True)],
            "purpose": "study"}
    upload = env.client.post("/api/uploads", json=body, headers=bearer(token)).json()
    for index, path in enumerate(paths):
        response = env.client.put(f"/api/uploads/{upload['upload_id']}/files/{index}", params={"offset": 0},
                                  content=path.read_bytes(),
                                  headers=bearer(token) | {"Content-Type": "application/octet-stream"})
        assert response.status_code == 200, response.text
    state = env.client.get(f"/api/uploads/{upload['upload_id']}", headers=bearer(token)).json()
    assert [f["name"] for f in state["files"]] == names  # the client sees its names while it uploads
    return upload


def test_no_client_name_or_original_identifier_is_kept_in_rows_files_or_logs(
        env: WebEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = env.tokens["clinician"]
    paths = write_phi_series(tmp_path / FILE_NAME)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{FILE_NAME}/README_{FILE_NAME}.txt", b"not DICOM: read past, never kept")
        for path in paths:
            archive.write(path, f"{FILE_NAME}/{path.name}")
    caplog.set_level(logging.DEBUG)
    response = env.client.post("/api/studies", headers=bearer(token),
                               files=[("files", (f"{FILE_NAME}.zip", buffer.getvalue(), "application/zip"))])
    assert response.status_code == 202, response.text
    ids = [response.json()]

    upload = _announce_and_send(env, token, paths)
    response = env.client.post(f"/api/uploads/{upload['upload_id']}/complete", headers=bearer(token))
    assert response.status_code in (200, 202), response.text
    ids.append(response.json())
    for accepted in ids:
        assert wait_for_job(env, accepted["job_id"], token)["status"] == "done"
    state = env.client.get(f"/api/uploads/{upload['upload_id']}", headers=bearer(token)).json()
    assert state["status"] == "done" and [f["name"] for f in state["files"]] == [""] * len(paths)

    rows = rows_text(env.settings.sqlalchemy_url)
    assert leaks(rows.encode()) == []  # neither the names nor the series' identifiers (kept only sealed)
    assert FILE_NAME.encode().lower() not in _database_file_bytes(env).lower()
    kept = [p.relative_to(env.settings.data_dir).as_posix() for p in env.settings.data_dir.rglob("*")]
    assert [p for p in kept if leaks(p.encode())] == []
    records = [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    assert any("de-identified 12 DICOM file(s)" in r for r in records)  # the log was captured
    assert [r for r in records if leaks(r.encode())] == []
