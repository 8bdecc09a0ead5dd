"""Run the real ``spineseg serve`` in a subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_TIMEOUT_S = 120  # a loaded 2-core machine imports torch and the app slowly


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """``spineseg serve`` with ``SPINESEG_DATA_DIR=data_dir``; ``start``/``stop`` may repeat."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra_env: str) -> None:
        # a single-user install unless asked otherwise (as web_helpers.make_settings)
        env = os.environ | {"SPINESEG_PROMOTION_APPROVAL": "single", "SPINESEG_DISK_RESERVE_MB": "64",
                            "SPINESEG_DISK_ROOM_MB": "1"} | extra_env | {
            "SPINESEG_DATA_DIR": str(self.data_dir),
            "SPINESEG_SECRET_KEY": "sL7q-2WxZp9_Rk4Tb6Nc1Vf8Hm3Gd5Ja0Ey",  # passes the entropy check
            "SPINESEG_DEVICE": "cpu",
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spineseg.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server did not answer in {START_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
