"""Browser test of issue 28 item 5's "rollback confirms" on a real ``spineseg serve``: rolling
production back on the models page asks first, naming the version production leaves and the one
it returns to; Cancel changes nothing, Yes rolls back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.training_helpers import BASE_VERSION, register_tiny_base
from tests.web.web_helpers import add_user, bearer, make_settings

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]

EARLIER = "tiny-earlier"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("rollback-browser")
    settings = make_settings(data_dir)
    register_tiny_base(settings, EARLIER, seed=1)  # production first ...
    register_tiny_base(settings)  # ... then BASE_VERSION: a rollback returns to EARLIER
    token = add_user(settings, "remi", "researcher")
    live = LiveServer(data_dir)
    live.start()
    yield live, token
    live.stop()


def _production(server: LiveServer, token: str) -> str:
    return httpx.get(f"{server.url}/api/health").json()["production_model"]


def test_rollback_asks_first_naming_both_versions(served: tuple[LiveServer, str], browser) -> None:
    server, token = served
    assert _production(server, token) == BASE_VERSION
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "remi")
    page.goto(f"{server.url}/models")
    assert page.locator("#rollback-confirm").is_hidden()
    page.click("#rollback-open")
    text = " ".join(page.inner_text("#rollback-text").split())
    assert f"Roll production back from {BASE_VERSION} to {EARLIER}?" in text
    assert "studies already segmented keep their runs" in text
    page.click("#rollback-cancel")
    assert page.locator("#rollback-confirm").is_hidden()
    time.sleep(0.5)
    assert _production(server, token) == BASE_VERSION  # nothing without the confirmation

    page.click("#rollback-open")
    with page.expect_navigation():
        page.click("#rollback")
    assert _production(server, token) == EARLIER
    assert f"{EARLIER} is production again" in page.inner_text("main")
    assert page.locator("#rollback-none").is_visible()  # nothing earlier to roll back to now
    history = httpx.get(f"{server.url}/api/models/history", headers=bearer(token)).json()
    assert history[-1]["action"] == "rollback" and history[-1]["actor"] == "remi"
    page.close()
