"""Settings: the session secret is refused outside development; .env and variables are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineseg.config import Settings
from spineseg.errors import InputError


def test_production_refuses_a_missing_or_weak_secret(tmp_path: Path) -> None:
    for secret in (None, "changethis"):
        with pytest.raises(InputError, match="SPINESEG_SECRET_KEY"):
            Settings(data_dir=tmp_path, environment="production", secret_key=secret).session_secret()
    with pytest.raises(InputError, match="at least 32"):
        Settings(data_dir=tmp_path, environment="production", secret_key="short-but-not-default").session_secret()
    strong = "Vq3-yT8pLm0sZx7_Kd2RfW9cHn4Jb6Ue1AoGi5Ns"
    assert Settings(data_dir=tmp_path, environment="production", secret_key=strong).session_secret() == strong


@pytest.mark.parametrize(("key", "words"), [
    ("a" * 39, "only 1 distinct"),
    ("abcabcabcabcabcabcabcabcabcabcabcabc", "only 3 distinct"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabcdefgh", "estimated 48 bits"),
])
def test_a_key_with_little_entropy_is_refused_in_every_environment(tmp_path: Path, key: str, words: str) -> None:
    for environment in ("production", "development"):
        with pytest.raises(InputError, match="SPINESEG_SECRET_KEY") as refused:
            Settings(data_dir=tmp_path, environment=environment, secret_key=key).session_secret()
        assert words in str(refused.value) and "token_urlsafe" in str(refused.value)


def test_random_keys_pass_the_entropy_check(tmp_path: Path) -> None:
    import secrets

    for key in (secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_hex(16), secrets.token_hex(32)):
        assert Settings(data_dir=tmp_path, environment="production", secret_key=key).session_secret() == key


def test_development_generates_one_secret_and_keeps_it(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).session_secret()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path).session_secret() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_environment_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("# settings\nSPINESEG_PORT=9001\nSPINESEG_MAX_UPLOAD_MB='5'\nOTHER=1\n")
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPINESEG_PORT", "9002")  # the real environment wins over .env
    settings = Settings.from_env()
    assert settings.port == 9002
    assert settings.max_upload_bytes == 5 * 2**20
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'data' / 'spineseg.db'}"


def test_bad_number_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPINESEG_PORT", "eighty")
    with pytest.raises(InputError, match="SPINESEG_PORT"):
        Settings.from_env()
