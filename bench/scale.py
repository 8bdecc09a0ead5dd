"""Throughput and per-job cost of the multi-process set-up, measured on this machine.

Starts PostgreSQL and Redis on 127.0.0.1 (tests/servers.py), a web server that only accepts
(``SPINESEG_WORKERS=0``) and 1, then 2, ``spineseg worker --jobs segment`` processes, the same
way as tests/jobs/test_worker_processes.py. For each set-up it uploads ``--studies`` phantom CTs
and prints:

- throughput: studies per minute from the first upload to the last job done;
- per job: database round trips of the workers (statements counted by SQLAlchemy's
  ``before_cursor_execute`` event inside each worker process), transactions the database
  server committed for everything (web server, workers, this script's status polls; from
  ``pg_stat_database``), Redis commands (``INFO stats``), and the bytes of the files a job
  reads from and writes to the shared data directory;
- idle, per worker and second: the statements of its heartbeats and reaper, and the Redis
  commands of its blocking pop (1 s timeout) plus the web server's queue-length checks, the
  floor every worker costs with nothing to do.

Per-job figures include what happens meanwhile (heartbeats, pops that time out, the web
server answering this script's status polls every 0.5 s per unfinished job).

    .venv/bin/python bench/scale.py [--studies 8] [--shape 192,160,96]

The network is the tiny test U-Net (segmentation quality is not what is measured here): the
figures are the queue and database overhead around a job, which docs/deployment.md scales to
10, 100 and 1,000 workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STATS_FLAG = "--worker-stats"
HEARTBEAT_S, STALE_S = 5, 30  # the defaults: the idle cost measured is the production one
IDLE_S = 15.0


def run_counted_worker(stats_path: Path, argv: list[str]) -> int:
    """``spineseg worker`` in this process, counting its SQL statements into ``stats_path``
    (rewritten every second and at exit)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts = {"statements": 0}
    lock = threading.Lock()

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(*_args: object) -> None:
        with lock:
            counts["statements"] += 1

    def dump() -> None:
        with lock:
            text = json.dumps(counts)
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(stats_path)

    def keep_dumping() -> None:
        while True:
            dump()
            time.sleep(1.0)

    threading.Thread(target=keep_dumping, daemon=True).start()
    from spineseg.cli.main import main

    try:
        return main(argv)
    finally:
        dump()


def _redis_commands(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def _pg_transactions(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        value = connection.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                        "WHERE datname = current_database()")).scalar_one()
    engine.dispose()
    return int(value)


def _worker_statements(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError, ValueError, KeyError):  # not written yet
            total += json.loads(path.read_text())["statements"]
    return total


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(workers: int, studies: int, shape: tuple[int, int, int], scratch: Path) -> dict[str, float]:
    import httpx

    from tests.model.conftest import write_phantom_case
    from tests.servers import PostgresServer, RedisServer
    from tests.web.live_server import LiveServer
    from tests.web.training_helpers import register_tiny_base
    from tests.web.web_helpers import TEST_SECRET_KEY, add_user, bearer, make_settings

    postgres = PostgresServer().start()
    redis_server = RedisServer(scratch / f"redis-{workers}").start()
    data_dir = scratch / f"data-{workers}"
    data_dir.mkdir()
    database_url = postgres.new_database("bench")
    settings = make_settings(data_dir, database_url=database_url, queue_url=redis_server.url())
    register_tiny_base(settings)
    token = add_user(settings, "bench", "clinician")
    env = {"SPINESEG_DATA_DIR": str(data_dir), "SPINESEG_DATABASE_URL": database_url,
           "SPINESEG_QUEUE_URL": redis_server.url(), "SPINESEG_SECRET_KEY": TEST_SECRET_KEY,
           "SPINESEG_DEVICE": "cpu", "SPINESEG_HEARTBEAT_S": str(HEARTBEAT_S), "SPINESEG_JOB_STALE_S": str(STALE_S)}
    web = LiveServer(data_dir)
    web.start(**env, SPINESEG_WORKERS="0")
    processes: list[subprocess.Popen[bytes]] = []
    stats = [scratch / f"stats-{workers}-{n}.json" for n in range(workers)]
    try:
        for n in range(workers):
            log = (data_dir / f"worker-{n}.log").open("ab")
            processes.append(subprocess.Popen(
                [sys.executable, __file__, STATS_FLAG, str(stats[n]), "worker", "--jobs", "segment"],
                env=os.environ | env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
                " ready: jobs " in (data_dir / f"worker-{n}.log").read_text() for n in range(workers)):
            time.sleep(0.2)
        # Idle cost: what the workers do with nothing queued.
        idle = (_worker_statements(stats), _redis_commands(redis_server.url()), time.monotonic())
        time.sleep(IDLE_S)
        idle_statements = _worker_statements(stats) - idle[0]
        idle_redis = _redis_commands(redis_server.url()) - idle[1]
        idle_s = time.monotonic() - idle[2]

        cts = [write_phantom_case(scratch / f"ct-{workers}-{n}", seed=n, shape=shape)[0] for n in range(studies)]
        before = (_worker_statements(stats), _redis_commands(redis_server.url()), _pg_transactions(database_url))
        started = time.monotonic()
        jobs = []
        for ct in cts:
            response = httpx.post(f"{web.url}/api/studies", headers=bearer(token), timeout=120,
                                  files=[("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))])
            response.raise_for_status()
            jobs.append(response.json())
        pending = {item["job_id"] for item in jobs}
        while pending and time.monotonic() < started + 1800:
            for job_id in list(pending):
                job = httpx.get(f"{web.url}/api/jobs/{job_id}", headers=bearer(token), timeout=60).json()
                if job["status"] in ("done", "failed", "cancelled"):
                    if job["status"] != "done":
                        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
                    pending.discard(job_id)
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        time.sleep(1.5)  # the workers' counters are written every second
        # Everything between the first upload and the last job done, divided by the jobs: the
        # heartbeats and blocking pops of that time are included (they are part of the cost).
        statements = _worker_statements(stats) - before[0]
        redis_ops = _redis_commands(redis_server.url()) - before[1]
        transactions = _pg_transactions(database_url) - before[2]
        studies_dir = data_dir / "studies"
        inputs = sum(_folder_bytes(d / "input") for d in studies_dir.iterdir() if (d / "input").is_dir())
        outputs = _folder_bytes(studies_dir) - inputs - sum(
            _folder_bytes(d / "truth") for d in studies_dir.iterdir() if (d / "truth").is_dir())
        weights = sum(p.stat().st_size for p in (data_dir / "models").rglob("weights.safetensors"))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        web.stop()
        redis_server.stop()
        postgres.stop()
    return {"workers": workers, "studies": studies, "elapsed_s": elapsed, "per_minute": studies / elapsed * 60,
            "statements_per_job": statements / studies, "transactions_per_job": transactions / studies,
            "redis_per_job": redis_ops / studies, "read_per_job": inputs / studies,
            "written_per_job": outputs / studies,
            "weights_bytes": weights, "idle_statements_per_s": idle_statements / idle_s / workers,
            "idle_redis_per_s": idle_redis / idle_s / workers}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == STATS_FLAG:
        return run_counted_worker(Path(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--shape", default="192,160,96", help="phantom CT size in voxels (x,y,z)")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory(prefix="spineseg-scale-") as folder:
        for workers in (1, 2):
            r = measure(workers, args.studies, shape, Path(folder))
            print(f"{r['workers']} worker process(es): {r['studies']} studies in {r['elapsed_s']:.1f} s = "
                  f"{r['per_minute']:.1f} studies/min | per job: {r['statements_per_job']:.0f} worker DB round trips, "
                  f"{r['transactions_per_job']:.0f} DB transactions (all processes), {r['redis_per_job']:.1f} Redis "
                  f"commands, {r['read_per_job'] / 1e6:.2f} MB read + {r['written_per_job'] / 1e6:.2f} MB written "
                  f"on shared storage (+ {r['weights_bytes'] / 1e6:.2f} MB weights once per worker) | idle worker: "
                  f"{r['idle_statements_per_s']:.2f} DB round trips/s, {r['idle_redis_per_s']:.2f} Redis commands/s",
                  flush=True)
    print(f"load average now: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPU(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
