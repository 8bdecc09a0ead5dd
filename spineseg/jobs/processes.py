"""Process control for training children: a child that dies with its parent, and the checks a
restarted server makes before it touches a process a crashed server left behind.

A training process (``python -m spineseg.jobs.train_job RUN_ID --parent-pid PID``) calls
``die_with_parent`` first: on Linux the kernel sends it SIGTERM when the scheduler thread that
started it ends (``prctl(PR_SET_PDEATHSIG)``), and a watcher thread notices a changed
``os.getppid()`` within a second as a backstop. SIGTERM stops training after the current step
and re-queues the run; if that takes longer than ``ORPHAN_GRACE_S`` the process exits at once.

At start the scheduler asks ``trainer_state`` about every run left ``running``: a PID that is
gone, or that now belongs to some other program (PIDs are recycled), is never signalled; an
orphaned trainer of that very run is ended with ``end_process`` before the run is queued again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_JOB_MODULE = "spineseg.jobs.train_job"
PARENT_PID_FLAG = "--parent-pid"
PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 1.0
ORPHAN_GRACE_S = 15.0
ORPHAN_EXIT_CODE = 3
TERM_WAIT_S = 5.0
KILL_WAIT_S = 5.0

GONE, OTHER_PROGRAM, OWNED, ORPHANED = "gone", "other program", "owned by a live parent", "orphaned"


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) ends; ``False``
    where ``prctl`` is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.warning("prctl unavailable (%s); relying on the parent watcher", exc)
        return False
    return True


def _watch_parent(parent_pid: int, grace_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    log.warning("parent process %d is gone: stopping this training process", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)  # the same clean stop as a server shutdown
    time.sleep(grace_s)
    log.error("still running %.0f s after the parent died: exiting now", grace_s)
    os._exit(ORPHAN_EXIT_CODE)


def die_with_parent(expected_parent: int | None = None, *, grace_s: float = ORPHAN_GRACE_S) -> bool:
    """Tie this process's life to its parent's. ``expected_parent`` is the PID that started
    us (``None``: whoever is the parent now); returns ``False`` when that parent is already
    gone (the caller should exit without doing anything)."""
    parent = os.getppid() if expected_parent is None else expected_parent
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the death signal was armed
        return False
    threading.Thread(target=_watch_parent, args=(parent, grace_s), name="spineseg-parent-watch",
                     daemon=True).start()
    return True


def _proc(pid: int) -> Path:
    return Path("/proc") / str(int(pid))


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), ``None`` if gone."""
    try:
        text = (_proc(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process; a zombie (exited, not yet reaped) is not."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line(pid: int) -> list[str]:
    """The argument vector of ``pid`` ([] when it is gone or unreadable)."""
    try:
        raw = (_proc(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_trainer_of(pid: int, run_id: str) -> bool:
    """Whether ``pid`` runs ``python -m spineseg.jobs.train_job <run_id>`` (a recycled PID of
    another program, or a trainer of another run, is not)."""
    argv = command_line(pid)
    return any(argv[i:i + 2] == ["-m", TRAIN_JOB_MODULE] for i in range(len(argv))) and run_id in argv


def _recorded_parent(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == PARENT_PID_FLAG and argv[i + 1].isdigit():
            return int(argv[i + 1])
    return None


def trainer_state(pid: int | None, run_id: str) -> str:
    """What the PID recorded on a ``running`` run is now: ``GONE``, ``OTHER_PROGRAM`` (never
    signal it), ``OWNED`` (a trainer whose starting server still lives: leave it alone) or
    ``ORPHANED`` (our trainer for this run without its server: end it before re-queueing)."""
    if pid is None or not process_alive(pid):
        return GONE
    if not is_trainer_of(pid, run_id):
        return OTHER_PROGRAM
    parent = _recorded_parent(command_line(pid))
    fields = _stat_fields(pid)
    current_parent = int(fields[1]) if fields else None
    if parent is not None and parent == current_parent and parent != os.getpid() and process_alive(parent):
        return OWNED
    return ORPHANED


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def end_process(pid: int, *, term_wait_s: float = TERM_WAIT_S, kill_wait_s: float = KILL_WAIT_S) -> bool:
    """SIGTERM, then SIGKILL after ``term_wait_s``; returns whether ``pid`` is gone."""
    for sig, wait in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, kill_wait_s)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if _wait_gone(pid, wait):
            return True
        log.warning("process %d still alive %.0f s after signal %s", pid, wait, sig.name)
    return False
