"""Does the web service stay responsive while a model trains? Prints figures, asserts nothing.

    python bench/training_responsiveness.py [--steps 200] [--batch 8] [--patch 128]

Starts ``spineseg serve`` on a free 127.0.0.1 port with a fresh data directory, builds a
two-case dataset from synthetic phantoms (a bone column in soft tissue), measures the latency of
``GET /api/health`` while idle, then starts a training run from scratch (default architecture)
and measures ``GET /api/health`` and ``GET /api/training/<id>`` again while it trains, and
cancels the run. The training process runs at a lower CPU priority (nice 10).
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
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

from spineseg.store import accounts
from spineseg.store.database import open_database


def phantom_case(folder: Path, seed: int) -> tuple[Path, Path]:
    """A 56x48x16 CT at 1.5 x 1.5 x 2.5 mm: soft tissue, a bright column, noise; its labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y = np.ogrid[:56, :48]
    body = ((x - 28) / 25.2) ** 2 + ((y - 24) / 19.2) ** 2 <= 1
    column = (x - 28 + int(rng.integers(-4, 5))) ** 2 + (y - 31) ** 2 <= 33
    hu = np.where(body, 40.0, -1000.0)[:, :, None] + rng.normal(0, 20, (56, 48, 16))
    hu[np.broadcast_to(column[:, :, None], hu.shape)] = 700.0
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), str(folder / "ct.nii.gz"))
    labels = np.broadcast_to(column[:, :, None], hu.shape).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, affine), str(folder / "labels.nii.gz"))
    return folder / "ct.nii.gz", folder / "labels.nii.gz"


def latencies_ms(client: httpx.Client, url: str, n: int = 40) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    times.sort()
    return statistics.median(times), times[max(0, int(0.95 * n) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="spineseg-bench-train-"))
    data = folder / "data"
    database = open_database(f"sqlite:///{data / 'spineseg.db'}")
    with database.session() as session:
        accounts.create_user(session, username="bench", password=secrets.token_urlsafe(16), role="researcher")
        _row, token = accounts.create_token(session, username="bench")
    database.dispose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"SPINESEG_DATA_DIR": str(data), "SPINESEG_SECRET_KEY": secrets.token_urlsafe(40),
                        "SPINESEG_DEVICE": "cpu"}
    with (folder / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "spineseg.cli.main", "serve", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        for _ in range(240):
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        dataset = client.post("/api/datasets", json={"name": "bench"}).json()["id"]
        for patient, seed in (("A", 1), ("B", 2)):
            ct, labels = phantom_case(folder / patient, seed)
            files = [("files", ("ct.nii.gz", ct.read_bytes())), ("truth", ("labels.nii.gz", labels.read_bytes()))]
            client.post(f"/api/datasets/{dataset}/cases", data={"patient": patient}, files=files)
        client.put(f"/api/datasets/{dataset}/split", json={"patients": {"A": "train", "B": "val"}})
        idle = latencies_ms(client, "/api/health")
        run = client.post("/api/training", json={"dataset_id": dataset, "base": "scratch", "settings": {
            "epochs": 1, "steps_per_epoch": args.steps, "batch_size": args.batch, "patch_size": args.patch}}).json()
        while client.get(f"/api/training/{run['id']}").json()["step"] < 2:
            time.sleep(0.5)
        busy = latencies_ms(client, "/api/health")
        busy_run = latencies_ms(client, f"/api/training/{run['id']}")
        state = client.get(f"/api/training/{run['id']}").json()
        client.post(f"/api/training/{run['id']}/cancel")
        sys.stdout.write(
            f"idle:     GET /api/health p50 {idle[0]:.1f} ms, p95 {idle[1]:.1f} ms\n"
            f"training: GET /api/health p50 {busy[0]:.1f} ms, p95 {busy[1]:.1f} ms; GET /api/training/<id> "
            f"p50 {busy_run[0]:.1f} ms, p95 {busy_run[1]:.1f} ms (run {state['status']}, step {state['step']}/"
            f"{state['total_steps']}, batch {args.batch}, patch {args.patch}, {os.cpu_count()} CPUs)\n")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
