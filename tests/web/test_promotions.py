"""Production changes need a second person by default (issue 28 item 5): a researcher's promote
only proposes, production stays until an admin other than the proposer approves; the proposer
cannot approve, may withdraw; an admin may reject; each step is audited; a lower candidate
needs its acknowledgement at the proposal; ``single`` promotes alone; bad input gets a clear
4xx. API and the models page's forms, on the real app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.registry import Registry
from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.test_model_governance_api import audit_rows, register
from tests.web.test_sessions_and_pages import HTML, csrf_from, logged_in_client
from tests.web.web_helpers import add_user, bearer, make_settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    root = tmp_path_factory.mktemp("promotions")
    settings = make_settings(root / "data", promotion_approval="two-person")
    settings.registry_dir.mkdir(parents=True)
    registry = Registry(settings.registry_dir)
    register(registry, root, "prod", {"c1": 0.8, "c2": 0.7}, production=True)
    register(registry, root, "higher", {"c1": 0.9, "c2": 0.8})
    register(registry, root, "lower", {"c1": 0.6, "c2": 0.5})
    tokens = {"researcher": add_user(settings, "rosa", "researcher"), "admin": add_user(settings, "adam", "admin"),
              "admin2": add_user(settings, "abel", "admin")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def _production(env: WebEnv) -> str:
    return env.client.get("/api/models", headers=bearer(env.tokens["researcher"])).json()["production"]


def test_a_researcher_proposes_and_a_second_person_approves(env: WebEnv) -> None:
    researcher, admin = bearer(env.tokens["researcher"]), bearer(env.tokens["admin"])
    proposed = env.client.post("/api/models/higher/promote", json={}, headers=researcher)
    assert proposed.status_code == 202, proposed.text
    proposal = proposed.json()["proposal"]
    assert (proposal["version_id"], proposal["proposed_by"], proposal["status"]) == ("higher", "rosa", "pending")
    assert proposed.json()["production"] == "prod" == _production(env)  # nothing changed yet
    again = env.client.post("/api/models/higher/promote", json={}, headers=researcher)
    assert again.status_code == 422 and again.json()["field"] == "version" and "already proposed" in again.text
    listed = env.client.get("/api/promotions", headers=researcher).json()
    assert listed["approval"] == "two-person" and [p["id"] for p in listed["pending"]] == [proposal["id"]]

    refused = env.client.post(f"/api/promotions/{proposal['id']}/approve", headers=researcher)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    approved = env.client.post(f"/api/promotions/{proposal['id']}/approve", headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["production"] == "higher" == _production(env)
    assert approved.json()["history"][-1]["actor"] == "adam"
    closed = env.client.post(f"/api/promotions/{proposal['id']}/approve", headers=admin)
    assert closed.status_code == 409 and "already approved by adam" in closed.json()["detail"]
    assert [r[:2] for r in audit_rows(env, "model.propose")] == [("rosa", "higher")]
    assert [r[:2] for r in audit_rows(env, "model.approve")] == [("adam", "higher")]
    assert [r[:2] for r in audit_rows(env, "model.promote")] == [("adam", "higher")]


def test_no_one_approves_their_own_proposal_and_lower_needs_its_acknowledgement(env: WebEnv) -> None:
    researcher, admin, admin2 = (bearer(env.tokens[k]) for k in ("researcher", "admin", "admin2"))
    production = _production(env)
    lower = env.client.post("/api/models/lower/promote", json={}, headers=admin)
    assert lower.status_code == 409 and "confirm" in lower.json()["detail"]  # as for a promotion
    proposed = env.client.post("/api/models/lower/promote", json={"confirm": True}, headers=admin)
    assert proposed.status_code == 202 and proposed.json()["proposal"]["confirm"] is True
    proposal_id = proposed.json()["proposal"]["id"]
    own = env.client.post(f"/api/promotions/{proposal_id}/approve", headers=admin)
    assert own.status_code == 403 and "another admin" in own.json()["detail"]
    not_hers = env.client.post(f"/api/promotions/{proposal_id}/reject", json={}, headers=researcher)
    assert not_hers.status_code == 403
    long_note = env.client.post(f"/api/promotions/{proposal_id}/reject", json={"note": "x" * 501}, headers=admin2)
    assert long_note.status_code == 422 and long_note.json()["field"] == "note"
    rejected = env.client.post(f"/api/promotions/{proposal_id}/reject", json={"note": "lower Dice"}, headers=admin2)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert _production(env) == production
    assert audit_rows(env, "model.reject")[0][:2] == ("abel", "lower")

    for path in ("/api/promotions/999/approve", "/api/promotions/999/reject"):
        missing = env.client.post(path, json={}, headers=admin2)
        assert missing.status_code == 404 and "999" in missing.json()["detail"]
    not_a_number = env.client.post("/api/promotions/abc/approve", headers=admin2)
    assert not_a_number.status_code == 422
    unknown = env.client.post("/api/models/no-such/promote", json={}, headers=researcher)
    assert unknown.status_code == 404 and "no-such" in unknown.text


def test_the_models_page_proposes_withdraws_and_approves(env: WebEnv) -> None:
    rosa, adam = logged_in_client(env, "rosa"), logged_in_client(env, "adam")
    page = rosa.get("/models/prod/promote", headers=HTML).text
    assert 'id="promote-two-person"' in page and "Propose prod for production" in page
    assert 'id="promote-confirm"' in page  # prod is lower than production (higher) now
    proposed = rosa.post("/models/prod/promote", data={"csrf_token": csrf_from(page), "confirm": "1"},
                         follow_redirects=False)
    assert proposed.status_code == 303
    models = rosa.get("/models", headers=HTML).text
    assert "proposed prod for production" in models and 'data-proposal=' in models
    assert "another administrator approves it" in models and "Withdraw" in models
    proposal_id = env.client.get("/api/promotions", headers=bearer(env.tokens["researcher"])).json()["pending"][0]["id"]

    admin_page = adam.get("/models", headers=HTML).text
    assert f'action="/models/proposals/{proposal_id}/approve"' in admin_page
    approved = adam.post(f"/models/proposals/{proposal_id}/approve", data={"csrf_token": csrf_from(admin_page)},
                         follow_redirects=False)
    assert approved.status_code == 303
    assert "prod is now the production version" in adam.get("/models", headers=HTML).text
    assert _production(env) == "prod"


def test_a_single_user_install_promotes_alone(tmp_path) -> None:
    settings: Settings = make_settings(tmp_path / "data", promotion_approval="single")
    settings.registry_dir.mkdir(parents=True)
    registry = Registry(settings.registry_dir)
    register(registry, tmp_path, "prod", {"c1": 0.8}, production=True)
    register(registry, tmp_path, "higher", {"c1": 0.9})
    token = add_user(settings, "solo", "researcher")
    with TestClient(create_app(settings)) as client:
        promoted = client.post("/api/models/higher/promote", json={}, headers=bearer(token))
        assert promoted.status_code == 200 and promoted.json()["production"] == "higher"
        assert "proposal" not in promoted.json()


def test_the_setting_refuses_an_unknown_value(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from spineseg.errors import InputError

    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPINESEG_PROMOTION_APPROVAL", "nobody")
    with pytest.raises(InputError, match="SPINESEG_PROMOTION_APPROVAL"):
        Settings.from_env()
    monkeypatch.delenv("SPINESEG_PROMOTION_APPROVAL")
    assert Settings.from_env().promotion_approval == "two-person"
