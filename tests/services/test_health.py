"""The health checks on a real database and registry: each fault is reported by the check it
belongs to, and the report never shows server paths."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import spineseg.services.health as health
from spineseg.registry import Registry
from spineseg.services.health import FAIL, OK, WARN, HealthMonitor, HealthReport, check_health
from spineseg.store.database import Database, open_database
from tests.web.web_helpers import make_settings, register_test_model


@pytest.fixture
def parts(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    model_id = register_test_model(settings)
    database = open_database(settings.sqlalchemy_url)
    registry = Registry(settings.registry_dir)
    yield settings, database, registry, model_id
    database.dispose()


def report_of(settings, database, registry, *, pending=lambda: 0, workers: int = 1) -> HealthReport:
    return check_health(database=database, registry=registry, data_dir=settings.data_dir, pending=pending,
                        workers=workers)


def test_everything_ok(parts) -> None:
    settings, database, registry, model_id = parts
    report = report_of(settings, database, registry, pending=lambda: 3)
    data = report.to_json()
    assert data["status"] == "ok", data
    assert set(data["checks"]) == {"database", "queue", "registry", "production_model", "disk"}
    assert all(check["status"] == OK for check in data["checks"].values())
    assert data["production_model"] == model_id and data["queued"] == 3


def test_a_flipped_byte_in_the_production_weights_fails_the_model_check(parts) -> None:
    settings, database, registry, model_id = parts
    weights = settings.registry_dir / "versions" / model_id / "weights.safetensors"
    assert report_of(settings, database, registry).status == "ok"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    data = report_of(settings, database, registry).to_json()
    assert data["status"] == "unavailable"
    assert data["checks"]["production_model"]["status"] == FAIL
    assert "sha256" in data["checks"]["production_model"]["detail"]
    assert str(settings.data_dir) not in str(data)


def test_a_corrupt_registry_state_fails_the_registry_check(parts) -> None:
    settings, database, registry, _model_id = parts
    (settings.registry_dir / "state.json").write_text("{not json")
    data = report_of(settings, database, registry).to_json()
    assert data["status"] == "unavailable"
    assert data["checks"]["registry"]["status"] == FAIL
    assert "corrupt" in data["checks"]["registry"]["detail"]
    assert str(settings.data_dir) not in str(data)


def test_no_production_model_fails(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings, make_production=False)
    database = open_database(settings.sqlalchemy_url)
    data = report_of(settings, database, Registry(settings.registry_dir)).to_json()
    database.dispose()
    assert data["checks"]["production_model"]["status"] == FAIL
    assert data["production_model"] is None


def test_a_database_that_is_not_one_fails_the_database_check(parts) -> None:
    settings, database, registry, _model_id = parts
    database.dispose()
    Path(settings.sqlalchemy_url.removeprefix("sqlite:///")).write_bytes(b"\x00garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(settings.sqlalchemy_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    data = report_of(settings, Database(settings.sqlalchemy_url), registry).to_json()
    assert data["checks"]["database"]["status"] == FAIL
    assert data["status"] == "unavailable"


def test_a_failing_queue_and_no_workers(parts) -> None:
    settings, database, registry, _model_id = parts

    def broken() -> int:
        raise OSError(f"disk I/O error in {settings.data_dir}/queue.db")

    data = report_of(settings, database, registry, pending=broken).to_json()
    assert data["checks"]["queue"]["status"] == FAIL and str(settings.data_dir) not in str(data)
    idle = report_of(settings, database, registry, workers=0).to_json()
    assert idle["status"] == "degraded" and idle["checks"]["queue"]["status"] == WARN


def test_low_and_exhausted_disk(parts, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, database, registry, _model_id = parts
    monkeypatch.setattr(health, "DISK_WARN_BYTES", 2**62)
    assert report_of(settings, database, registry).to_json()["checks"]["disk"]["status"] == WARN
    monkeypatch.setattr(health, "DISK_FAIL_BYTES", 2**61)
    assert report_of(settings, database, registry).status == "unavailable"


def test_a_stale_report_is_a_failure() -> None:
    report = HealthReport({"database": health.Check(OK, "fine")}, checked_at=time.time() - 600)
    data = report.to_json()
    assert data["status"] == "unavailable" and data["checks"]["monitor"]["status"] == FAIL


def test_the_monitor_keeps_the_newest_report_and_survives_a_failing_probe() -> None:
    calls = []

    def probe() -> HealthReport:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return HealthReport({"database": health.Check(OK, f"call {len(calls)}")})

    monitor = HealthMonitor(probe, interval_s=0.05)
    assert monitor.latest.status == "ok"
    monitor.start()
    deadline = time.monotonic() + 10
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    assert len(calls) >= 4
    assert monitor.latest.status == "ok"  # the failure in call 2 did not stop the loop
