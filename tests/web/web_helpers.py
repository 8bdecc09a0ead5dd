"""Building a real data directory for web tests: an untrained model registered as production
(segmentation quality is not what these tests check), users, tokens."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from spineseg.config import Settings
from spineseg.model.card import CARD_FILE, ModelCard
from spineseg.model.network import DEFAULT_ARCHITECTURE, build_network, save_weights
from spineseg.registry import Registry
from spineseg.store import accounts
from spineseg.store.database import open_database

PASSWORD = "correct horse battery"
TEST_SECRET_KEY = "tK3v-9QzLw2_Xy7Rb5Nd8Pf1Hs4Gj6Mc0Ae"  # fixed, passes config.check_secret_strength


def make_settings(data_dir: Path, **changes: object) -> Settings:
    # "single": the tests that promote act alone, as on a single-user install; the two-person
    # approval (the default) is tested where it is asked for (tests/web/test_promotions.py)
    # A small reserve and room file: hundreds of test apps must neither refuse work on a CI disk
    # with a few GB free nor leave 16 MB each in pytest's folders (tests/web/test_full_disk.py
    # tests the defaults' behaviour with its own values).
    values = {"secret_key": TEST_SECRET_KEY, "device": "cpu", "promotion_approval": "single",
              "disk_reserve_mb": 64, "disk_room_mb": 1} | changes
    return Settings(data_dir=data_dir, **values)  # type: ignore[arg-type]


# The untrained networks of the web tests normalise by instance, not by batch as the shipped one
# does: untrained, batch norm's initial statistics make it answer much the same everywhere (87 %
# of a random batch above threshold), so two seeds give the same block of a mask, where instance
# norm gives seed-dependent masks with edges, for the pages to draw and the runs to compare.
UNTRAINED_ARCHITECTURE = DEFAULT_ARCHITECTURE | {"norm": "instance"}


def register_test_model(settings: Settings, *, make_production: bool = True) -> str:
    """An untrained network of the default layout (``UNTRAINED_ARCHITECTURE``), registered (as
    production)."""
    folder = settings.data_dir / "untrained-model"
    network = build_network(UNTRAINED_ARCHITECTURE)
    save_weights(network, folder / "weights.safetensors")
    card = ModelCard(id="test-untrained", architecture=UNTRAINED_ARCHITECTURE)
    (folder / CARD_FILE).write_text(card.to_json())
    registry = Registry(settings.registry_dir)
    settings.registry_dir.mkdir(parents=True, exist_ok=True)
    return registry.register(folder / "weights.safetensors", card, make_production=make_production, actor="test").id


def add_user(settings: Settings, username: str, role: str) -> str:
    """Create ``username`` with ``PASSWORD`` and return a fresh API token for them."""
    database = open_database(settings.sqlalchemy_url)
    with database.session() as session:
        accounts.create_user(session, username=username, password=PASSWORD, role=role)
        _row, token = accounts.create_token(session, username=username)
    database.dispose()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload_and_wait(url: str, token: str, path: Path, truth: Path | None = None, *, timeout_s: float = 600) -> str:
    """POST a NIfTI CT (and its truth) to a live server at ``url``, wait for its segment job to
    finish, and return the study id; a job that fails or does not finish in time fails the test."""
    handles = [path.open("rb")] + ([truth.open("rb")] if truth else [])
    files = [("files", (path.name, handles[0], "application/gzip"))]
    if truth:
        files.append(("truth", (truth.name, handles[1], "application/gzip")))
    try:
        response = httpx.post(f"{url}/api/studies", headers=bearer(token), timeout=120, files=files)
    finally:
        for handle in handles:
            handle.close()
    assert response.status_code == 202, response.text
    ids = response.json()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/jobs/{ids['job_id']}", headers=bearer(token)).json()
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", job
            return ids["study_id"]
        time.sleep(0.5)
    raise AssertionError(f"the segment job did not finish in {timeout_s} s")
