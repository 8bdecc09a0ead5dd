"""Fixtures for the web tests: a data directory with a production model, the real app in a
TestClient (worker threads running), and tokens for each role."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.web.app import create_app
from tests.web.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.web.web_helpers import add_user, make_settings, register_test_model


@dataclass
class WebEnv:
    settings: Settings
    client: TestClient
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def backends(backend_servers: object) -> Callable[[Settings], Settings]:
    """Settings -> the same settings on the session's back-ends: unchanged when embedded; with
    ``--backends=pg-redis`` a fresh PostgreSQL database and the Redis queue, emptied, per test
    module (call it once per module, before the app starts)."""
    def apply(settings: Settings) -> Settings:
        if backend_servers is None:
            return settings
        postgres, redis = backend_servers
        redis.flush()
        return dataclasses.replace(settings, database_url=postgres.new_database(), queue_url=redis.url())
    return apply


@pytest.fixture(scope="module")
def web_env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    """One app per test module (start-up costs a migration and a model registration)."""
    settings = backends(make_settings(tmp_path_factory.mktemp("web-data"), max_upload_bytes=64 * 2**20))
    register_test_model(settings)
    tokens = {role: add_user(settings, role, role) for role in ("viewer", "clinician", "researcher", "admin")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, one per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
