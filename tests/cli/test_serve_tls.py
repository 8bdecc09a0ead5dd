"""``spineseg serve --tls-cert FILE --tls-key FILE``: HTTPS straight from uvicorn, with HSTS
and Secure cookies, against a real server and a self-signed certificate made here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.web.live_server import LiveServer
from tests.web.web_helpers import PASSWORD, add_user, make_settings, register_test_model

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class TlsServer(LiveServer):
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def test_serve_speaks_https_with_hsts_and_secure_cookies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_test_model(settings)
    add_user(settings, "ada", "admin")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # LiveServer's health poll trusts our certificate
    server = TlsServer(data_dir)
    server.start(SPINESEG_TLS_CERT=str(cert), SPINESEG_TLS_KEY=str(key))
    try:
        with httpx.Client(base_url=server.url, verify=str(cert)) as client:
            health = client.get("/api/health")
            assert health.status_code == 200
            assert health.headers["strict-transport-security"] == "max-age=31536000"
            page = client.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            login = client.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf},
                                follow_redirects=False)
            assert login.status_code == 303
            cookies = [v for k, v in login.headers.multi_items() if k == "set-cookie"]
            assert cookies and all("secure" in c.lower() for c in cookies)
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{server.port}/api/health", timeout=5)
        assert "open https://127.0.0.1:" in server.log_path.read_text()
    finally:
        server.stop()


def test_a_certificate_without_its_key_is_refused_naming_the_setting(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)
    result = subprocess.run([sys.executable, "-m", "spineseg.cli.main", "serve", "--tls-cert", str(cert)],
                            env={"SPINESEG_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SPINESEG_TLS_KEY (--tls-key)" in result.stderr and "both" in result.stderr
