"""The README's set-up, followed as written by a newcomer: a fresh data directory, `spineseg
serve` (what `make serve` runs) as a real process, the one-time link read from its start-up
log, opened in a real browser to create the admin, then a shared case uploaded up to its result.

Skipped with the reason when /usr/bin/chromium or the shared cases are absent."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer

RESULT_TIMEOUT_MS = 300_000  # the shipped model on a busy 2-core CPU
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
LINK = re.compile(r"SpineSeg is ready: open (http://\S+/setup\?token=\S+) to create the first admin account")
PASSWORD = "vertebra column 42"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.slow,
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "fresh-data")  # nothing in it: no model, no database, no user
    live.data_dir.mkdir()
    live.start()
    yield live
    live.stop()


def start_up_lines(server: LiveServer) -> list[str]:
    """The log up to the first request (LiveServer polls /api/health until it answers)."""
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    first_request = next((i for i, line in enumerate(lines) if '"GET /' in line), len(lines))
    return lines[:first_request]


def test_from_serve_to_a_logged_in_result_page(server: LiveServer, browser, shared_cases: Path) -> None:
    ct = shared_cases / "ts-abdomen" / "ct.nii.gz"
    lines = start_up_lines(server)
    last = lines[-1]
    link = LINK.search(last)
    assert link, f"the last start-up line is not the first-run link:\n{chr(10).join(lines)}"
    assert f"data: {server.data_dir}" in last and "model: spineseg-default-v3" in last
    assert "queue: SQLite" in last and "database: sqlite:///" in last
    assert not [line for line in lines if "alembic" in line], "library noise in the start-up log"
    assert sum("token=" in line for line in lines) == 1  # printed once

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(link.group(1))
    assert "at least 8 characters" in page.inner_text("#first-run-form")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "first-run-page.png"))
    page.fill("#setup-username", "ada")
    page.fill("#setup-password", PASSWORD)
    page.fill("#setup-password-again", PASSWORD)
    page.click("#setup-button")
    page.wait_for_url("**/studies")
    assert "ada (admin)" in page.inner_text("header")

    page.goto(link.group(1))  # the link is spent
    assert "exists already" in page.inner_text("main")

    page.goto(f"{server.url}/models")  # the shipped default as production, its predecessors beside it
    shipped = page.inner_text("tr[data-version='spineseg-default-v3']")
    assert "production" in shipped and "expected 0.763" in shipped and "replaces spineseg-default-v2" in shipped
    assert "replaces spineseg-default-v1" in page.inner_text("tr[data-version='spineseg-default-v2']")
    for earlier in ("spineseg-default-v2", "spineseg-default-v1"):
        assert "production" not in page.inner_text(f"tr[data-version='{earlier}']")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "models-shipped.png"), full_page=True)

    page.goto(f"{server.url}/")  # still logged in: the home page is the study list
    page.wait_for_url("**/studies")
    page.click("a[href='/upload']")
    page.wait_for_url("**/upload")
    page.set_input_files("#files", str(ct))
    page.click("#upload-button")
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("#result", timeout=60_000)
    assert "ada (admin)" in page.inner_text("header")
    page.close()
