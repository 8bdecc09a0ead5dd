"""Load on the web service; prints figures, asserts nothing.

    python bench/web_load.py [-k 4] [--shared ../shared/data]

Starts ``spineseg serve`` on a free 127.0.0.1 port with a fresh data directory (the shipped
default model when the package has one, else an untrained network of the default architecture,
which costs the same to run), then K clients, each with its own connection, upload the same
100-slice CT at once (ts-abdomen cut to 100 slices, or a synthetic CT without shared data) and
poll their job's status every 0.2 s until it ends. Prints: volumes per minute, p50/p95 latency
of the status requests, failures, the server's peak RSS, and the ratio of the web path's wall
time to ``spineseg segment`` doing the same K volumes in one process.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SLICES = 100


def make_ct(shared: Path, out: Path) -> str:
    """Write the 100-slice CT to ``out``; returns a description of where it came from."""
    import nibabel as nib

    source = shared / "cases" / "ts-abdomen" / "ct.nii.gz"
    if source.is_file():
        image = nib.load(str(source))
        data = np.asarray(image.dataobj)[:, :, :SLICES]
        nib.save(nib.Nifti1Image(data.astype(np.int16), image.affine), str(out))
        return f"ts-abdomen cut to {data.shape}"
    shape = (256, 256, SLICES)
    x, y = np.ogrid[: shape[0], : shape[1]]
    plane = np.full(shape[:2], -1000, dtype=np.int16)
    plane[((x - 128) / 110) ** 2 + ((y - 128) / 85) ** 2 <= 1] = 40
    plane[((x - 128) ** 2 + (y - 160) ** 2) <= 14**2] = 700
    nib.save(nib.Nifti1Image(np.repeat(plane[:, :, None], SLICES, axis=2), np.diag([1.2, 1.2, 2.5, 1])), str(out))
    return f"synthetic {shape} (no shared data)"


def prepare_data_dir(data_dir: Path) -> tuple[str, str]:
    """Model and a clinician token in a fresh data directory; returns (model id, token)."""
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
    with database.session() as session:
        accounts.create_user(session, username="bench", password=secrets.token_urlsafe(16), role="clinician")
        _row, token = accounts.create_token(session, username="bench")
    database.dispose()
    return str(registry.production_id()), token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client(threading.Thread):
    """One user: upload, then poll the job until it ends, timing every status request."""

    def __init__(self, url: str, token: str, ct: Path, start: threading.Barrier) -> None:
        super().__init__()
        self.url, self.token, self.ct, self.start_barrier = url, token, ct, start
        self.latencies: list[float] = []
        self.status = "not started"
        self.error = ""

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=600) as client:
            self.start_barrier.wait()
            try:
                response = client.post("/api/studies", files=[("files", ("ct.nii.gz", self.ct.read_bytes()))])
            except httpx.HTTPError as exc:
                self.status, self.error = "upload error", str(exc)
                return
            if response.status_code != 202:
                self.status, self.error = f"upload {response.status_code}", response.text[:200]
                return
            job_id = response.json()["job_id"]
            while True:
                t0 = time.perf_counter()
                job = client.get(f"/api/jobs/{job_id}").json()
                self.latencies.append(time.perf_counter() - t0)
                if job["status"] not in ("queued", "running"):
                    self.status, self.error = job["status"], job.get("error") or ""
                    return
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=4, help="concurrent uploads (default 4)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spineseg-webload-") as tmp:
        tmp_path = Path(tmp)
        ct = tmp_path / "ct100.nii.gz"
        origin = make_ct(args.shared, ct)
        data_dir = tmp_path / "data"
        model_id, token = prepare_data_dir(data_dir)
        port = free_port()
        env = os.environ | {"SPINESEG_DATA_DIR": str(data_dir), "SPINESEG_SECRET_KEY": secrets.token_urlsafe(40)}
        log = (tmp_path / "server.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "spineseg.cli.main", "serve", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.25)
            barrier = threading.Barrier(args.k)
            clients = [Client(url, token, ct, barrier) for _ in range(args.k)]
            started = time.perf_counter()
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            web_s = time.perf_counter() - started
            rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()

        inputs = []
        for n in range(args.k):
            copy = tmp_path / f"cli{n}.nii.gz"
            copy.write_bytes(ct.read_bytes())
            inputs.append(str(copy))
        t0 = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "spineseg.cli.main", "segment", *inputs, "--output-dir",
                              str(tmp_path / "cli-out"), "--model", model_id], env=env, capture_output=True)
        cli_s = time.perf_counter() - t0

    latencies = sorted(lat for c in clients for lat in c.latencies)
    done = sum(c.status == "done" for c in clients)
    failures = [f"{c.status}: {c.error}" for c in clients if c.status != "done"]
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000 if latencies else float("nan")
    out = sys.stdout
    out.write(f"input: {origin}; model {model_id}; K={args.k} concurrent clients; {os.cpu_count()} CPU cores\n")
    out.write(f"web: {done}/{args.k} done in {web_s:.1f} s -> {60 * done / web_s:.2f} volumes/min\n")
    out.write(f"status requests: n={len(latencies)} p50 {p50:.1f} ms, p95 {p95:.1f} ms\n")
    out.write(f"failures: {len(failures)}" + "".join(f"\n  {f}" for f in failures) + "\n")
    out.write(f"server peak RSS: {rss:.0f} MB\n")
    cli_note = "" if cli.returncode == 0 else f" (CLI exit {cli.returncode}: {cli.stderr.decode()[-200:]})"
    out.write(f"CLI `spineseg segment` on the same {args.k} volumes: {cli_s:.1f} s; web/CLI time ratio "
              f"{web_s / cli_s:.2f}{cli_note}\n")


if __name__ == "__main__":
    main()
