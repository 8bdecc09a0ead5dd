"""The start-up log's last line: the address to open (the first-run link while no account
exists), the data directory, model, queue and database."""

from __future__ import annotations

from pathlib import Path

from spineseg.services.startup import display_url, ready_message
from tests.web.web_helpers import make_settings


def test_display_url_for_wildcard_and_ipv6_hosts() -> None:
    assert display_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert display_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert display_url("::", 8000) == "http://[::1]:8000"
    assert display_url("spine.example.org", 80) == "http://spine.example.org:80"


def test_ready_message_names_everything(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url="postgresql://spine:hunter2@db/spineseg")
    first = ready_message(settings, url="http://127.0.0.1:8000", model_id="spineseg-default-v1",
                          first_run_token="TOKEN", first_run_minutes=30)
    assert first.startswith("SpineSeg is ready: open http://127.0.0.1:8000/setup?token=TOKEN to create the first")
    assert "30 minutes" in first and f"data: {tmp_path}" in first and "model: spineseg-default-v1" in first
    assert f"queue: SQLite {tmp_path / 'queue.db'}, 1 worker(s)" in first
    assert "database: postgresql://spine:***@db/spineseg" in first and "hunter2" not in first
    later = ready_message(settings, url="http://127.0.0.1:8000", model_id=None, first_run_token=None,
                          first_run_minutes=30)
    assert "open http://127.0.0.1:8000/ and log in" in later and "model: none" in later
