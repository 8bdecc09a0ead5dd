"""Announced upload bytes are capped by the free disk (issue 30.7d): 60 resumable announces of
2,000 MB each were accepted with 70 GB free. An announce is refused (507, with the figures)
when it and every unfinished upload's outstanding bytes would not fit in the free disk minus a
reserve; finishing or aborting uploads, or bytes arriving, makes room again."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.services import resumable_uploads
from spineseg.services.resumable_uploads import DISK_RESERVE_BYTES
from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

MB, GB = 10**6, 10**9
FREE = 70 * GB


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    settings = backends(make_settings(tmp_path_factory.mktemp("disk-room"), max_upload_bytes=2100 * MB,
                                      disk_reserve_mb=DISK_RESERVE_BYTES // 2**20))
    register_test_model(settings)
    tokens = {"clinician": add_user(settings, "cleo", "clinician")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


@pytest.fixture
def seventy_gb_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resumable_uploads, "free_disk_bytes", lambda _folder: FREE)


def _announce(env: WebEnv, size: int) -> object:
    return env.client.post("/api/uploads", json={"files": [{"name": "series.zip", "size": size}]},
                           headers=bearer(env.tokens["clinician"]))


def test_announces_stop_where_the_disk_would_fill(env: WebEnv, seventy_gb_free: None) -> None:
    headers = bearer(env.tokens["clinician"])
    answers = [_announce(env, 2000 * MB) for _ in range(60)]
    accepted = [a.json()["upload_id"] for a in answers if a.status_code == 201]
    assert len(accepted) == (FREE - DISK_RESERVE_BYTES) // (2000 * MB) == 33
    refused = [a for a in answers if a.status_code != 201]
    assert {a.status_code for a in refused} == {507}
    detail = refused[0].json()["detail"]
    assert "not enough disk for this upload: it announces 1.86 GiB" in detail and "2 GiB kept in reserve" in detail
    assert "abort other uploads" in detail

    room = FREE - DISK_RESERVE_BYTES - 33 * 2000 * MB
    assert _announce(env, room + 1).status_code == 507
    # bytes that arrived are on disk already: only what is still to come counts
    chunk = 8 * 2**20
    assert env.client.put(f"/api/uploads/{accepted[0]}/files/0?offset=0", content=b"x" * chunk,
                          headers=headers).status_code == 200
    later = _announce(env, room + 1)  # fits now: 8 MiB fewer are still to come
    assert later.status_code == 201, later.text
    accepted.append(later.json()["upload_id"])
    assert _announce(env, chunk).status_code == 507  # 8 MiB - 1 byte left

    assert env.client.delete(f"/api/uploads/{accepted[1]}", headers=headers).status_code == 200
    assert _announce(env, 2000 * MB).status_code == 201  # an abort gives its room back
    for upload_id in accepted:
        env.client.delete(f"/api/uploads/{upload_id}", headers=headers)


def test_the_real_disk_is_measured(env: WebEnv) -> None:
    free = resumable_uploads.free_disk_bytes(env.settings.uploads_dir)
    assert free > 0
    answer = _announce(env, 10 * MB)
    assert answer.status_code == (201 if free - DISK_RESERVE_BYTES > 10 * MB else 507), answer.text
