"""Governance of model versions through the API and the pages: display names and notes, the
promotion review, 409 refusals unless ``confirm`` / ``force`` (administrators) say so, and the
audit rows of promote and rollback carrying the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.model.card import ModelCard
from spineseg.registry import Registry
from spineseg.store import audit
from spineseg.store.database import open_database
from spineseg.web.app import create_app
from tests.conftest import make_model_folder
from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import HTML
from tests.web.web_helpers import add_user, bearer, make_settings


def register(registry: Registry, folder: Path, version_id: str, val: dict[str, float] | None,
             production: bool = False) -> None:
    source = make_model_folder(folder / version_id, model_id=version_id, seed=len(version_id))
    card = ModelCard.read(source / "card.json")
    card.dataset = {"manifest": [{"name": n, "split": "val"} for n in sorted(val or {})]}
    if val:
        mean = sum(val.values()) / len(val)
        card.metrics = {"val_dice": mean, "history": [{"epoch": 1, "val_dice": mean, "val_dice_per_case": val}]}
    card.notes = f"run notes of {version_id}"
    registry.register(source / "weights.safetensors", card, make_production=production, actor="test")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    root = tmp_path_factory.mktemp("governance")
    settings = make_settings(root / "data")
    settings.registry_dir.mkdir(parents=True)
    registry = Registry(settings.registry_dir)
    register(registry, root, "prod", {"c1": 0.8, "c2": 0.7}, production=True)
    register(registry, root, "lower", {"c1": 0.6, "c2": 0.5})
    register(registry, root, "higher", {"c1": 0.9, "c2": 0.8})
    register(registry, root, "other-cases", {"c9": 0.99})
    register(registry, root, "unvalidated", None)
    tokens = {"researcher": add_user(settings, "rosa", "researcher"), "admin": add_user(settings, "adam", "admin")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def audit_rows(env: WebEnv, action: str) -> list:
    database = open_database(env.settings.sqlalchemy_url)
    try:
        with database.session() as session:
            return [(e.username, e.target, e.detail) for e in audit.search(session, action=action)]
    finally:
        database.dispose()


def test_review_refusals_confirm_force_and_audit(env: WebEnv) -> None:
    researcher, admin = bearer(env.tokens["researcher"]), bearer(env.tokens["admin"])
    review = env.client.get("/api/models/lower/promotion", headers=researcher).json()
    assert review["comparable"] and review["candidate_lower"]
    assert review["candidate"]["cases"] == review["production"]["cases"] == ["c1", "c2"]
    assert review["candidate"]["dice"] == pytest.approx(0.55) and review["production"]["dice"] == pytest.approx(0.75)

    page = env.client.get("/models/lower/promote", headers=researcher | HTML).text  # the confirmation step
    candidate = page.split('data-role="candidate"')[1].split("</tr>")[0]
    production = page.split('data-role="current production"')[1].split("</tr>")[0]
    assert "<code>lower</code>" in candidate and "0.5500" in candidate and "c1, c2" in candidate
    assert "<code>prod</code>" in production and "0.7500" in production and "c1, c2" in production
    assert "Both figures are on the same validation cases" in page
    assert "data-warning>lower scores lower than production prod" in page and 'id="promote-confirm"' in page
    assert "different</strong> validation cases" in env.client.get("/models/other-cases/promote",
                                                                   headers=researcher | HTML).text
    refused = env.client.post("/api/models/lower/promote", headers=researcher)
    assert refused.status_code == 409
    assert "lower than production prod" in refused.json()["detail"] and "confirm" in refused.json()["detail"]
    assert env.client.get("/api/health").json()["production_model"] == "prod"
    other = env.client.post("/api/models/other-cases/promote", headers=researcher)
    assert other.status_code == 409 and "different validation cases" in other.json()["detail"]

    attempts = ((researcher, None), (researcher, {"force": True, "confirm": True}), (admin, {"confirm": True}))
    for headers, body in attempts:
        response = env.client.post("/api/models/unvalidated/promote", headers=headers, json=body)
        assert response.status_code == 409 and "no validation figures" in response.json()["detail"]
    assert env.client.get("/api/health").json()["production_model"] == "prod"

    done = env.client.post("/api/models/lower/promote", headers=researcher, json={"confirm": True})
    assert done.status_code == 200 and done.json()["production"] == "lower"
    username, target, detail = audit_rows(env, "model.promote")[0]
    assert (username, target) == ("rosa", "lower")
    assert "lower: Dice 0.5500 on c1, c2" in detail and "production was prod: Dice 0.7500 on c1, c2" in detail
    assert "lower, confirmed" in detail

    forced = env.client.post("/api/models/unvalidated/promote", headers=admin, json={"force": True})
    assert forced.status_code == 200 and forced.json()["production"] == "unvalidated"
    assert "without validation figures by an administrator" in audit_rows(env, "model.promote")[0][2]

    rolled = env.client.post("/api/models/rollback", headers=researcher)
    assert rolled.status_code == 200 and rolled.json()["production"] == "lower"
    username, target, detail = audit_rows(env, "model.rollback")[0]
    assert (username, target) == ("rosa", "lower")
    assert detail == "back to lower: Dice 0.5500 on c1, c2 (card); from unvalidated: no validation Dice"

    higher = env.client.post("/api/models/higher/promote", headers=researcher)  # no confirmation needed
    assert higher.status_code == 200 and higher.json()["review"]["warnings"] == []


def test_names_and_notes_show_on_the_models_page_and_where_a_version_is_chosen(env: WebEnv) -> None:
    headers = bearer(env.tokens["researcher"])
    named = env.client.patch("/api/models/higher", headers=headers,
                             json={"display_name": "Lumbar fine-tune (Dec)", "notes": "better on L5"})
    assert named.status_code == 200
    assert (named.json()["display_name"], named.json()["version_notes"]) == ("Lumbar fine-tune (Dec)", "better on L5")
    assert env.client.get("/api/models/higher", headers=headers).json()["display_name"] == "Lumbar fine-tune (Dec)"
    too_long = env.client.patch("/api/models/higher", headers=headers, json={"display_name": "x" * 81})
    assert too_long.status_code == 422 and "display_name" in too_long.json()["detail"]
    assert "at most 80" in too_long.json()["detail"]
    unknown = env.client.patch("/api/models/nope", headers=headers, json={"display_name": "a"})
    assert unknown.status_code == 404 and "known versions" in unknown.json()["detail"]
    assert str(env.settings.data_dir) not in unknown.json()["detail"]  # no server folder in the message
    assert audit_rows(env, "model.label")[0][:2] == ("rosa", "higher")

    models = env.client.get("/models", headers=headers | HTML).text
    row = models.split('data-version="higher"')[1].split("</tr>")[0]
    assert "Lumbar fine-tune (Dec)" in row and "better on L5" in row and "run notes of higher" in row
    assert "on c1, c2" in row  # which validation cases the figure is on
    other = models.split('data-version="other-cases"')[1].split("</tr>")[0]
    assert "on c9" in other
    unvalidated = models.split('data-version="unvalidated"')[1].split("</tr>")[0]
    assert "not validated" in unvalidated
    training = env.client.get("/training", headers=headers | HTML).text
    assert "Lumbar fine-tune (Dec) · higher" in training


def test_a_cross_validated_version_shows_its_expected_accuracy_and_what_it_replaces(env: WebEnv) -> None:
    registry = Registry(env.settings.registry_dir)
    source = make_model_folder(env.settings.data_dir.parent / "cv-model", model_id="cross-validated", seed=5)
    card = ModelCard.read(source / "card.json")
    cases = {f"case{i}": {"dice": 0.7, "partial": False} for i in range(5)} | {"t12": {"dice": 0.5, "partial": True}}
    card.metrics = {"val_dice": None, "cross_validation": {"mean_dice": 0.7288, "sd_dice": 0.0751, "cases": cases}}
    card.predecessor_id = "prod"
    registry.register(source / "weights.safetensors", card, actor="test")
    headers = bearer(env.tokens["researcher"])

    row = env.client.get("/api/models/cross-validated", headers=headers).json()
    assert row["expected"] == {"dice": 0.7288, "sd": 0.0751, "cases": 5} and row["predecessor_id"] == "prod"
    models = env.client.get("/models", headers=headers | HTML).text
    cells = models.split('data-version="cross-validated"')[1].split("</tr>")[0]
    assert "expected 0.729 ± 0.075" in cells and "5 held-out patients" in cells and "not validated" not in cells
    assert "replaces <code>prod</code>" in cells
    assert env.client.get("/api/models/unvalidated", headers=headers).json()["expected"] is None
