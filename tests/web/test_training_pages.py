"""The researcher pages with a browser-like session: create a dataset, edit its split, start a
run from the form, see the live page, the models page with lineage and production badge,
promote/rollback and compare from forms; other roles are turned away."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import HTML, csrf_from
from tests.web.training_helpers import BASE_VERSION, case_parts, register_tiny_base, wait_for_run
from tests.web.web_helpers import PASSWORD, add_user, bearer, make_settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    settings = make_settings(tmp_path_factory.mktemp("pages-data"))
    register_tiny_base(settings)
    tokens = {"researcher": add_user(settings, "rene", "researcher"),
              "clinician": add_user(settings, "clara", "clinician"), "admin": add_user(settings, "ada", "admin")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def session_for(env: WebEnv, username: str) -> TestClient:
    client = TestClient(env.client.app)
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text), "next": "/datasets"},
                           follow_redirects=False)
    assert response.status_code == 303
    return client


def test_dataset_training_and_models_pages(env: WebEnv, tmp_path: Path) -> None:
    browser = session_for(env, "rene")
    listing = browser.get("/datasets", headers=HTML)
    assert listing.status_code == 200 and "No dataset yet" in listing.text
    created = browser.post("/datasets", data={"name": "pages-set", "csrf_token": csrf_from(listing.text)},
                           follow_redirects=False)
    assert created.status_code == 303
    dataset_url = created.headers["location"]
    dataset_id = dataset_url.rsplit("/", 1)[-1]
    no_csrf = browser.post("/datasets", data={"name": "sneaky"}, headers=HTML)
    assert no_csrf.status_code == 403

    for patient, seed in (("A", 1), ("B", 2)):  # the page's script posts to this API with the session's token
        page = browser.get(dataset_url, headers=HTML)
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        added = browser.post(f"/api/datasets/{dataset_id}/cases", files=case_parts(tmp_path / patient, seed),
                             data={"patient": patient, "site": "north"}, headers={"X-CSRF-Token": token})
        assert added.status_code == 201, added.text
    page = browser.get(dataset_url, headers=HTML)
    assert page.text.count('data-case-id="') == 2 and "north (2)" in page.text
    saved = browser.post(f"{dataset_url}/split", data={"csrf_token": csrf_from(page.text), "split-A": "train",
                                                       "split-B": "test"}, follow_redirects=False)
    assert saved.status_code == 303
    page = browser.get(dataset_url, headers=HTML)
    assert "train 1 / val 0 / test 1" in page.text

    form = browser.get(f"/training?dataset={dataset_id}", headers=HTML)
    assert f'<option value="{dataset_id}" selected>' in form.text
    bad = browser.post("/training", data={"csrf_token": csrf_from(form.text), "dataset_id": dataset_id,
                                          "base": BASE_VERSION, "epochs": "0", "steps_per_epoch": "7"},
                       follow_redirects=False)
    assert bad.status_code == 303 and bad.headers["location"] == "/training"  # post/redirect/get
    kept = browser.get("/training", headers=HTML)
    assert 'id="error-epochs"' in kept.text and 'value="7"' in kept.text and 'value="0"' in kept.text
    assert 'id="error-epochs"' not in browser.get("/training", headers=HTML).text  # shown once
    started = browser.post("/training", data={"csrf_token": csrf_from(form.text), "dataset_id": dataset_id,
                                              "base": BASE_VERSION, "epochs": "1", "steps_per_epoch": "2",
                                              "batch_size": "2", "patch_size": "32"}, follow_redirects=False)
    assert started.status_code == 303
    run_id = started.headers["location"].rsplit("/", 1)[-1]
    live = browser.get(f"/training/{run_id}", headers=HTML)
    assert live.status_code == 200 and 'id="loss-chart"' in live.text and 'id="dice-chart"' in live.text
    run = wait_for_run(env.client, run_id, env.tokens["researcher"])
    assert run["status"] == "done", run
    version_id = run["version_id"]

    models = browser.get("/models", headers=HTML)
    assert models.status_code == 200
    assert re.search(rf'<code>{BASE_VERSION}</code>\s*<span class="badge production">', models.text)
    lineage = models.text.split('id="lineage"')[1].split("</section>")[0]
    assert lineage.index(BASE_VERSION) < lineage.index(version_id) and lineage.count('<ul class="tree">') == 2
    # The dataset has no val patient: the version was never validated, so a researcher cannot
    # promote it (not even ticking boxes by hand); an administrator can, saying so explicitly.
    confirm = browser.get(f"/models/{version_id}/promote", headers=HTML)
    assert confirm.status_code == 200 and 'data-role="candidate"' in confirm.text
    assert 'data-role="current production"' in confirm.text and "no validation Dice" in confirm.text
    assert 'id="promote-needs-admin"' in confirm.text and 'id="promote-button"' not in confirm.text
    refused = browser.post(f"/models/{version_id}/promote", data={"csrf_token": csrf_from(confirm.text),
                                                                  "confirm": "1", "force": "1"})
    assert refused.url.path == f"/models/{version_id}/promote" and 'id="error-force"' in refused.text
    assert "an administrator must do it" in refused.text
    assert env.client.get("/api/health").json()["production_model"] == BASE_VERSION
    admin = session_for(env, "ada")
    confirm = admin.get(f"/models/{version_id}/promote", headers=HTML)
    assert 'id="promote-force"' in confirm.text
    without = admin.post(f"/models/{version_id}/promote", data={"csrf_token": csrf_from(confirm.text)})
    assert 'id="error-force"' in without.text  # the box was not ticked
    promoted = admin.post(f"/models/{version_id}/promote", data={"csrf_token": csrf_from(confirm.text),
                                                                 "force": "1"}, follow_redirects=False)
    assert promoted.status_code == 303 and promoted.headers["location"] == "/models"
    models = browser.get("/models", headers=HTML)
    assert re.search(rf'<code>{version_id}</code>\s*<span class="badge production">', models.text)
    assert "<td>promote</td>" in models.text and "<td>ada</td>" in models.text
    compared = browser.post("/models/compare", data={"csrf_token": csrf_from(models.text), "dataset_id": dataset_id,
                                                     "versions": [BASE_VERSION, version_id], "split": "test"},
                            follow_redirects=False)
    assert compared.status_code == 303 and compared.headers["location"].startswith("/models/comparisons/")
    compared = browser.get(compared.headers["location"], headers=HTML)
    assert compared.status_code == 200 and 'id="compare-cases"' in compared.text
    assert "needs at least two cases" in compared.text  # one test case here
    one = browser.post("/models/compare", data={"csrf_token": csrf_from(models.text), "dataset_id": dataset_id,
                                                "versions": [version_id]}, headers=HTML)
    assert one.status_code == 200 and one.url.path == "/models" and "choose 2 to 6 versions" in one.text
    assert re.search(rf'value="{version_id}" checked', one.text)  # the ticked version stays ticked
    rolled = browser.post("/models/rollback", data={"csrf_token": csrf_from(models.text)}, follow_redirects=False)
    assert rolled.status_code == 303
    assert env.client.get("/api/health").json()["production_model"] == BASE_VERSION


def test_other_roles_do_not_see_or_open_the_research_pages(env: WebEnv) -> None:
    browser = session_for(env, "clara")
    studies = browser.get("/studies", headers=HTML)
    assert 'href="/training"' not in studies.text
    for path in ("/datasets", "/training", "/models"):
        response = browser.get(path, headers=HTML)
        assert response.status_code == 403 and "researcher role needed" in response.text
    assert env.client.get("/api/datasets", headers=bearer(env.tokens["clinician"])).status_code == 403
