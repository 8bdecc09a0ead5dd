"""A request authenticated by a token reads only; its use is written at most once a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from spineseg.store import accounts
from spineseg.store.database import open_database
from spineseg.store.models import ApiToken
from spineseg.web.app import create_app
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


def test_note_token_use_writes_once_per_resolution(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with database.session() as session:
        accounts.create_user(session, username="ann", password="long enough pw", role="viewer")
        row, secret = accounts.create_token(session, username="ann")
        token_id = row.id
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with database.session() as session:
        found = accounts.token_row(session, token=secret)
        assert found is not None and accounts.token_use_is_stale(found, now)
        assert accounts.note_token_use(session, token_id=token_id, now=now)
    with database.session() as session:
        assert not accounts.note_token_use(session, token_id=token_id, now=now + timedelta(seconds=30))
        found = accounts.token_row(session, token=secret)
        assert not accounts.token_use_is_stale(found, now + timedelta(seconds=30))
        assert accounts.token_use_is_stale(found, now + accounts.TOKEN_USE_RESOLUTION)
        assert accounts.note_token_use(session, token_id=token_id, now=now + accounts.TOKEN_USE_RESOLUTION)
    database.dispose()


def test_polling_with_a_token_does_not_write_on_every_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    database = open_database(settings.sqlalchemy_url)

    def last_used() -> datetime | None:
        with database.session() as session:
            return session.scalar(select(ApiToken.last_used_at))

    with TestClient(create_app(settings)) as client:
        assert client.get("/api/studies", headers=bearer(token)).status_code == 200
        first = last_used()
        assert first is not None
        for _ in range(5):
            assert client.get("/api/studies", headers=bearer(token)).status_code == 200
        assert last_used() == first
        assert client.get("/api/studies", headers=bearer("sst_not-a-token")).status_code == 401
    database.dispose()
