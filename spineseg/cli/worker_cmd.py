"""``spineseg worker [--jobs segment,train] [--concurrency N]``: run jobs from the queue in
this process (settings from SPINESEG_* variables: the same queue, database and data directory
as the web server; see ``spineseg.jobs.worker``). SIGTERM or Ctrl-C: running jobs go back to
the queue and the process exits."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="run queued jobs (segment, train) in this process")
    parser.add_argument("--jobs", default="segment,train",
                        help="comma-separated job kinds to take: segment, train (default both)")
    parser.add_argument("--concurrency", type=int, default=1, help="segment jobs run at the same time (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spineseg.config import Settings
    from spineseg.jobs.worker import parse_job_kinds, run_worker
    from spineseg.services.startup import check_startup
    from spineseg.store.files import restrict_data_dir

    jobs = parse_job_kinds(args.jobs)
    settings = Settings.from_env()
    restrict_data_dir(settings.data_dir)
    check_startup(settings)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_worker(settings, jobs=jobs, concurrency=args.concurrency, stop=stop)
    return 0
