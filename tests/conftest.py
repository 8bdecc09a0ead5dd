"""Shared fixtures: tiny synthetic phantoms and access to ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spineseg.imaging.volume import Provenance, Volume

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPINESEG_SHARED_DATA", REPO.parent / "shared" / "data"))
CASES = SHARED_DATA / "cases"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backends", choices=("embedded", "pg-redis"), default="embedded",
                     help="database and queue of the API tests' apps: embedded (SQLite + Huey's SQLite "
                          "queue) or pg-redis (PostgreSQL + Redis servers started on 127.0.0.1)")


@pytest.fixture(scope="session")
def backend_servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``None`` (embedded), or the (PostgreSQL, Redis) servers of ``--backends=pg-redis``,
    started once per session in temporary folders."""
    if request.config.getoption("--backends") == "embedded":
        yield None
        return
    from tests.servers import PostgresServer, RedisServer, missing_servers

    reason = missing_servers()
    if reason:
        pytest.fail(f"--backends=pg-redis: {reason}")
    postgres = PostgresServer().start()
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield postgres, redis
    finally:
        redis.stop()
        postgres.stop()


@pytest.fixture
def shared_cases() -> Path:
    """The folder of real cases; skips the test with the reason when it is absent."""
    if not CASES.is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    return CASES


def make_phantom(shape: tuple[int, int, int] = (48, 40, 24), spacing=(1.5, 1.5, 2.5)) -> tuple[Volume, np.ndarray]:
    """A soft-tissue body (40 HU) in air (-1000 HU) with a bright bone column (700 HU) running
    along the slice axis, plus its exact binary mask."""
    nx, ny, _ = shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    x, y = np.ogrid[:nx, :ny]
    body = ((x - nx / 2) / (nx * 0.45)) ** 2 + ((y - ny / 2) / (ny * 0.4)) ** 2 <= 1
    hu[body] = 40.0
    column = ((x - nx / 2) ** 2 + (y - ny * 0.65) ** 2) <= (min(nx, ny) * 0.12) ** 2
    hu[column] = 700.0
    mask = np.zeros(shape, dtype=np.uint8)
    mask[column] = 1
    affine = np.diag([*spacing, 1.0])
    return Volume(hu, affine, Provenance("phantom", "derived")), mask


@pytest.fixture
def phantom() -> tuple[Volume, np.ndarray]:
    return make_phantom()


TINY_ARCHITECTURE = {
    "name": "monai.UNet",
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 1,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
}


def make_model_folder(folder: Path, *, model_id: str = "tiny-untrained", seed: int = 0) -> Path:
    """A real (untrained, tiny) model folder: weights.safetensors + card.json."""
    import torch

    from spineseg.model.card import ModelCard
    from spineseg.model.network import build_network, save_weights

    torch.manual_seed(seed)
    save_weights(build_network(TINY_ARCHITECTURE), folder / "weights.safetensors")
    card = ModelCard(id=model_id, architecture=dict(TINY_ARCHITECTURE), spacing_mm=(1.5, 1.5, 2.5))
    (folder / "card.json").write_text(card.to_json())
    return folder


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Derived files (ONNX graphs, the runtime choice) go to one folder per test session, not
    the user's cache; servers the tests start inherit it."""
    folder = tmp_path_factory.mktemp("spineseg-cache")
    previous = os.environ.get("SPINESEG_CACHE_DIR")
    os.environ["SPINESEG_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SPINESEG_CACHE_DIR", None)
    else:
        os.environ["SPINESEG_CACHE_DIR"] = previous


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return make_model_folder(tmp_path / "tiny-model")


@pytest.fixture
def empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SPINESEG_DATA_DIR pointing at an empty folder, and no shipped default model."""
    import spineseg.registry.lookup as lookup

    data = tmp_path / "data"
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(data))
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: tmp_path / "no-default-model")
    return data
