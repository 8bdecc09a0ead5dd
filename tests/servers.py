"""Real Redis and PostgreSQL servers for tests and benchmarks, started on 127.0.0.1 in a
temporary folder (no system service): Debian's ``redis-server`` and PostgreSQL's ``initdb`` /
``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin``.

PostgreSQL refuses to run as root; as root (CI) the server runs as the ``postgres`` system user
(made by Debian's package) through ``runuser``, in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

START_TIMEOUT_S = 30.0
PG_USER = "spineseg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_servers() -> str | None:
    """Why the servers cannot start here (a sentence), or ``None`` when both are installed."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    if postgres_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started"
    return None


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class RedisServer:
    """``redis-server`` on a free port, no persistence, data folder ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        _wait_for_port(self.port, self.process, self.folder / "redis.log")
        return self

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url())
        client.flushall()
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free port (trust authentication on 127.0.0.1).
    ``new_database()`` gives each test module a database of its own."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.port = free_port()
        # Not under pytest's tmp_path: that folder is private to root, and the server may run as
        # another user, who must be able to reach its data folder.
        self.folder = Path(tempfile.mkdtemp(prefix="spineseg-pg-"))
        self.as_root = os.geteuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=False,
                              cwd=self.folder, timeout=120)

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "data"
        done = self._run(str(self.bin / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                         "--encoding=UTF8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder} "
                   "-c fsync=off -c max_connections=300")
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "postgres.log"),
                         "-o", options, "-w", "-t", str(int(START_TIMEOUT_S)), "start")
        if done.returncode != 0:
            log = (self.folder / "postgres.log")
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}"
                               f"{log.read_text() if log.exists() else ''}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        data = self.folder / "data"
        if data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT_S} s: {log.read_text()}")
