"""Names people type hold no control or bidirectional-override character (issue 30.7c): every
field that takes one (study name and site at upload, announce and rename; dataset name and
description; model version display name and notes; usernames; token names) refuses NUL, C0/C1
controls and U+202A-U+202E / U+2066-U+2069 with a 422 naming the field and the character."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.names import check_typed_name, check_typed_text
from spineseg.store import accounts
from spineseg.store.database import open_database
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti
from tests.web.web_helpers import bearer

UNSAFE = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
          "\u2066", "\u2067", "\u2068", "\u2069"]
SAFE = ["Lumbar scan", "Étude 3 — ½ dose", "腰椎 L1-L5", "סריקה 12", "فحص 7", "🦴 spine"]


@pytest.mark.parametrize("char", UNSAFE)
def test_each_unsafe_character_is_named(char: str) -> None:
    with pytest.raises(InputError) as raised:
        check_typed_name(f"report{char}fdp.exe", "name")
    assert raised.value.field == "name" and f"U+{ord(char):04X}" in raised.value.reason
    assert "at character 7" in raised.value.reason
    with pytest.raises(InputError):
        check_typed_text(f"line one\nline{char}two", "notes")


@pytest.mark.parametrize("text", SAFE)
def test_names_in_any_script_and_right_to_left_ones_are_kept(text: str) -> None:
    assert check_typed_name(text, "name") == text
    assert check_typed_text(text + "\nsecond line\twith a tab", "notes").startswith(text)


def _refused(response: object, field: str, char: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert field in (body["field"], body["source"]), body
    assert f"U+{ord(char):04X}" in body["detail"] or "not a usable name" in body["detail"] \
        or "letters, digits" in body["detail"], body


@pytest.mark.parametrize("char", ["\x00", "\u202e", "\u2066", "\x9b"])
def test_every_named_field_of_the_api_refuses_it(web_env: WebEnv, tmp_path: Path, char: str) -> None:
    clinician, researcher, admin = (bearer(web_env.tokens[r]) for r in ("clinician", "researcher", "admin"))
    bad = f"Scan{char}A"
    announce = {"files": [{"name": "ct.nii.gz", "size": 10}]}
    _refused(web_env.client.post("/api/uploads", json=announce | {"name": bad}, headers=clinician), "name", char)
    _refused(web_env.client.post("/api/uploads", json=announce | {"site": bad}, headers=clinician), "site", char)
    ct, _truth = phantom_nifti(tmp_path)
    files = [("files", ("ct.nii.gz", ct, "application/gzip"))]
    _refused(web_env.client.post("/api/studies", files=files, data={"name": bad}, headers=clinician), "name", char)
    accepted = web_env.client.post("/api/studies", files=files, data={"name": "fine"}, headers=clinician)
    assert accepted.status_code == 202, accepted.text
    study = accepted.json()["study_id"]
    _refused(web_env.client.put(f"/api/studies/{study}/name", json={"name": bad}, headers=clinician), "name", char)
    assert web_env.client.get(f"/api/studies/{study}", headers=clinician).json()["name"] == "fine"

    _refused(web_env.client.post("/api/datasets", json={"name": bad}, headers=researcher), "name", char)
    _refused(web_env.client.post("/api/datasets", json={"name": "ok set", "description": bad}, headers=researcher),
             "description", char)
    _refused(web_env.client.patch("/api/models/test-untrained", json={"display_name": bad}, headers=researcher),
             "display_name", char)
    _refused(web_env.client.patch("/api/models/test-untrained", json={"notes": bad}, headers=researcher),
             "notes", char)
    _refused(web_env.client.post("/api/users", json={"username": bad, "password": "correct horse battery",
                                                     "role": "viewer"}, headers=admin), "username", char)


def test_a_token_name_refuses_it(web_env: WebEnv) -> None:
    database = open_database(web_env.settings.sqlalchemy_url)
    try:
        with database.session() as session, pytest.raises(InputError) as raised:
            accounts.create_token(session, username="viewer", name="laptop\u202e")
        assert raised.value.field == "name"
    finally:
        database.dispose()
