"""Browser test of issue 28 item 5 on a real ``spineseg serve`` with the default two-person
approval: a researcher's "Propose" leaves production as it is and lists the proposal; she cannot
approve it; an admin approves it on the models page and the version becomes production."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from spineseg.registry import Registry
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.test_model_governance_api import register
from tests.web.web_helpers import add_user, bearer, make_settings

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    root = tmp_path_factory.mktemp("promotions-browser")
    settings = make_settings(root / "data")
    settings.registry_dir.mkdir(parents=True)
    registry = Registry(settings.registry_dir)
    register(registry, root, "prod", {"c1": 0.8, "c2": 0.7}, production=True)
    register(registry, root, "higher", {"c1": 0.9, "c2": 0.8})
    tokens = {"rosa": add_user(settings, "rosa", "researcher"), "adam": add_user(settings, "adam", "admin")}
    live = LiveServer(settings.data_dir)
    live.start(SPINESEG_PROMOTION_APPROVAL="two-person")
    yield live, tokens
    live.stop()


def _production(server: LiveServer) -> str:
    return httpx.get(f"{server.url}/api/health").json()["production_model"]


def test_a_researcher_proposes_and_an_admin_approves(served: tuple[LiveServer, dict[str, str]], browser) -> None:
    server, tokens = served
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log_in(page, server, "rosa")
    page.goto(f"{server.url}/models/higher/promote")
    assert "an administrator other than you approves it" in page.inner_text("#promote-two-person")
    with page.expect_navigation():
        page.click("#promote-button")
    assert "production is unchanged until then" in page.inner_text("#models-notice")
    row = page.locator("#proposals tr[data-version='higher']")
    assert "rosa" in row.inner_text() and row.locator("button.approve").count() == 0
    assert _production(server) == "prod"
    context.close()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log_in(page, server, "adam")
    page.goto(f"{server.url}/models")
    with page.expect_navigation():
        page.click("#proposals tr[data-version='higher'] button.approve")
    assert "higher is now the production version" in page.inner_text("#models-notice")
    assert page.locator("#proposals").count() == 0
    assert _production(server) == "higher"
    history = httpx.get(f"{server.url}/api/models/history", headers=bearer(tokens["adam"])).json()
    assert history[-1]["actor"] == "adam"
    context.close()
