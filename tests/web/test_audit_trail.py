"""Every read and write of patient data leaves an audit row; the admin page shows the chain's
state, filters and exports CSV; `spineseg audit verify` names a tampered row."""

from __future__ import annotations

import csv
import io
import sqlite3
import sys

import pytest

from spineseg.cli.main import main
from tests.web.conftest import WebEnv
from tests.web.test_session_records import study  # noqa: F401  (module fixture: one finished study)
from tests.web.test_sessions_and_pages import csrf_from, logged_in_client
from tests.web.web_helpers import bearer


def events(env: WebEnv, **filters: str) -> list[dict]:
    answer = env.client.get("/api/audit", params={"limit": 1000, **filters}, headers=bearer(env.tokens["admin"]))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_reads_of_patient_data_are_audited(web_env: WebEnv, study: dict) -> None:  # noqa: F811
    study_id, token = study["study_id"], bearer(web_env.tokens["viewer"])
    for path in ("", "/ct.nii.gz", "/truth.nii.gz", "/mask.nii.gz", "/summary.json", "/overlays.zip"):
        assert web_env.client.get(f"/api/studies/{study_id}{path}", headers=token).status_code == 200, path
    assert web_env.client.get(f"/api/studies/{study_id}/overlay.png", params={"slice": 2},
                              headers=token).status_code == 200
    assert web_env.client.get("/api/studies", headers=token).status_code == 200
    page_client = logged_in_client(web_env, "viewer")
    assert page_client.get(f"/studies/{study_id}").status_code == 200
    assert page_client.get("/studies").status_code == 200

    mine = events(web_env, user="viewer")
    downloads = {e["detail"] for e in mine if e["action"] == "download" and e["target"] == study_id}
    run = f"run={study['id']}"  # each download names the run (the job) whose file was read
    assert {f"{what} {run}" for what in ("ct.nii.gz", "truth.nii.gz", "mask.nii.gz", "summary.json",
                                         "overlays.zip", "overlay.png slice=2")} <= downloads
    assert sum(e["action"] == "study.view" and e["target"] == study_id for e in mine) == 2  # API + page
    assert sum(e["action"] == "study.list" for e in mine) >= 2
    assert any(e["action"] == "login" for e in mine)
    uploads = events(web_env, action="upload")
    assert any(e["target"] == study_id for e in uploads)


def test_failed_logins_and_role_changes_are_audited(web_env: WebEnv) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(web_env.client.app)
    page = client.get("/login")
    client.post("/login", data={"username": "nobody-here", "password": "x" * 9, "csrf_token": csrf_from(page.text)})
    assert events(web_env, action="login.failed")[0]["username"] == "nobody-here"
    answer = web_env.client.patch("/api/users/researcher", json={"role": "researcher"},
                                  headers=bearer(web_env.tokens["admin"]))
    assert answer.status_code == 200
    change = events(web_env, action="user.change")[0]
    assert change["target"] == "researcher" and change["username"] == "admin"


def test_admin_page_shows_the_chain_filters_and_exports_csv(web_env: WebEnv) -> None:
    admin = logged_in_client(web_env, "admin")
    page = admin.get("/admin")
    assert page.status_code == 200 and "Chain intact" in page.text
    filtered = admin.get("/admin", params={"user": "nobody-here", "action": "login.failed"})
    rows = filtered.text.split('id="audit"')[1]
    assert "nobody-here" in rows and "study.view" not in rows
    assert admin.get("/admin", params={"date_from": "not a date"}).status_code == 422
    exported = admin.get("/api/audit.csv", params={"action": "login"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert table and {r["action"] for r in table} <= {"login", "login.failed"} and all(len(r["hmac"]) == 64
                                                                                      for r in table)
    assert web_env.client.get("/api/audit/verify", headers=bearer(web_env.tokens["admin"])).json()["intact"]
    assert web_env.client.get("/api/audit", headers=bearer(web_env.tokens["viewer"])).status_code == 403


def _cli_verify(env: WebEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(env.settings.data_dir))
    monkeypatch.setenv("SPINESEG_SECRET_KEY", env.settings.secret_key)
    monkeypatch.setattr(sys, "argv", ["spineseg"])
    code = main(["audit", "verify"])
    return code, capsys.readouterr().out


def test_tampering_in_sqlite_is_seen_by_the_cli_and_the_admin_page(web_env: WebEnv, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if web_env.settings.database_url:
        pytest.skip("edits the SQLite file behind the service's back; --backends=pg-redis has none")
    code, out = _cli_verify(web_env, monkeypatch, capsys)
    assert code == 0 and out.startswith("audit chain intact") and "head: " in out
    db = str(web_env.settings.data_dir / "spineseg.db")
    with sqlite3.connect(db) as raw:
        (target_id, target_seq), = raw.execute("SELECT id, seq FROM audit_events WHERE action = 'download' "
                                               "ORDER BY seq LIMIT 1").fetchall()
        raw.execute("UPDATE audit_events SET username = 'someone' WHERE id = ?", (target_id,))
    code, out = _cli_verify(web_env, monkeypatch, capsys)
    assert code == 1
    assert out.splitlines()[0] == (f"audit chain broken: row id {target_id} (seq {target_seq}): "
                                   "content does not match its HMAC (edited or forged)")
    admin = logged_in_client(web_env, "admin")
    assert "Chain intact" in admin.get("/admin").text  # the state of up to a minute ago ...
    page = admin.get("/admin", params={"verify": 1})  # ... or walked now
    assert f"Chain broken: row id {target_id} (seq {target_seq})" in page.text


def test_viewing_a_dataset_is_audited(web_env: WebEnv) -> None:
    admin = bearer(web_env.tokens["researcher"])
    created = web_env.client.post("/api/datasets", json={"name": "audited set"}, headers=admin)
    assert created.status_code in (200, 201), created.text
    dataset_id = created.json()["id"]
    assert web_env.client.get(f"/api/datasets/{dataset_id}", headers=admin).status_code == 200
    assert logged_in_client(web_env, "researcher").get(f"/datasets/{dataset_id}").status_code == 200
    views = [e for e in events(web_env, action="dataset.view") if e["target"] == dataset_id]
    assert len(views) == 2 and {e["username"] for e in views} == {"researcher"}
