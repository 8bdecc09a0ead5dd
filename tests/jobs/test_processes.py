"""Process control for trainers, on real processes: a child armed with ``die_with_parent``
dies when its parent is killed (by the kernel's parent-death signal, or by the watcher thread
alone where that signal is not armed); ``trainer_state`` tells a trainer owned by a live
parent from an orphan, and either from a recycled PID; ``end_process`` ends an orphan."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from spineseg.jobs.processes import (
    GONE,
    ORPHANED,
    OTHER_PROGRAM,
    OWNED,
    command_line,
    end_process,
    is_trainer_of,
    process_alive,
    trainer_state,
)

RUN_ID = "ab" * 16
# ``python -c CODE -m spineseg.jobs.train_job RUN`` looks like a trainer on /proc but only sleeps.
FAKE_TRAINER = "import time; time.sleep(60)"

PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    code, *args = sys.argv[1:]
    args = [str(os.getpid()) if arg == "OWN_PID" else arg for arg in args]
    child = subprocess.Popen([sys.executable, "-c", code, *args])
    print(child.pid, flush=True)
    time.sleep(60)
""")

ARMED_CHILD = textwrap.dedent("""
    import sys, time
    from spineseg.jobs import processes
    if "--no-prctl" in sys.argv:
        processes.set_parent_death_signal = lambda sig=None: False  # only the watcher is left
    processes.die_with_parent(grace_s=5)
    time.sleep(60)
""")


def spawn_grandchild(code: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """A parent process that starts ``python -c code args``; returns it and the child's PID."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, code, *args], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    # Popen returns once the child is forked; its /proc cmdline is the parent's until it execs.
    deadline = time.monotonic() + 10
    while code not in command_line(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    return parent, child


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_zombie_and_a_reaped_process_are_not_alive() -> None:
    child = subprocess.Popen(["true"])
    assert wait_gone(child.pid, 10)  # exited, not yet reaped: a zombie
    child.wait(timeout=10)
    assert not process_alive(child.pid) and not process_alive(0)
    assert trainer_state(None, RUN_ID) == trainer_state(child.pid, RUN_ID) == GONE


@pytest.mark.slow
@pytest.mark.parametrize("how", ["prctl", "watcher"])
def test_an_armed_child_dies_with_its_killed_parent(how: str) -> None:
    parent, child = spawn_grandchild(ARMED_CHILD, *(["--no-prctl"] if how == "watcher" else []))
    try:
        time.sleep(1.5)  # let the child import and arm itself
        assert process_alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert wait_gone(child, 5), f"child {child} outlived its parent ({how})"
    finally:
        if process_alive(child):
            end_process(child, term_wait_s=1, kill_wait_s=1)


@pytest.mark.slow
def test_trainer_state_tells_owned_orphaned_and_other_programs() -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    parent, trainer = spawn_grandchild(FAKE_TRAINER, "-m", "spineseg.jobs.train_job", RUN_ID,
                                       "--parent-pid", "OWN_PID")
    try:
        assert is_trainer_of(trainer, RUN_ID) and not is_trainer_of(stranger.pid, RUN_ID)
        assert trainer_state(trainer, RUN_ID) == OWNED  # a live server's trainer is left alone
        assert trainer_state(trainer, "cd" * 16) == OTHER_PROGRAM  # a trainer, but of another run
        assert trainer_state(stranger.pid, RUN_ID) == OTHER_PROGRAM  # e.g. a recycled PID
        parent.kill()
        parent.wait(timeout=10)
        assert wait_gone(parent.pid, 5)
        assert trainer_state(trainer, RUN_ID) == ORPHANED  # reparented: its server is gone
        assert end_process(trainer, term_wait_s=2, kill_wait_s=2)
        assert trainer_state(trainer, RUN_ID) == GONE
        assert process_alive(stranger.pid)  # never signalled
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if process_alive(trainer):
            end_process(trainer, term_wait_s=1, kill_wait_s=1)
        stranger.kill()
        stranger.wait(timeout=10)
