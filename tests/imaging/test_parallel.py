"""Slab work on several threads (``spineseg.imaging.parallel``)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from spineseg.imaging import parallel
from spineseg.imaging.resample import resample_array, upsample_into


def test_the_thread_count_follows_the_setting_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINESEG_THREADS", "3")
    assert parallel.thread_count() == 3
    for unusable in ("0", "-2", "many", ""):
        monkeypatch.setenv("SPINESEG_THREADS", unusable)
        assert 1 <= parallel.thread_count() <= parallel.MAX_THREADS


def test_every_item_runs_on_the_pool_and_a_failure_waits_for_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINESEG_THREADS", "2")
    done, names = [], set()

    def work(i: int) -> None:
        time.sleep(0.01)
        names.add(threading.current_thread().name)
        if i == 1:
            raise ValueError("slab 1")
        done.append(i)

    with pytest.raises(ValueError, match="slab 1"):
        parallel.for_each(work, range(6))
    assert sorted(done) == [0, 2, 3, 4, 5]  # nothing still running when the error arrives
    assert all(name.startswith("spineseg-slab") for name in names)


def test_nested_and_single_thread_work_runs_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINESEG_THREADS", "2")
    inner_threads = []

    def outer(_: int) -> None:
        parallel.for_each(lambda __: inner_threads.append(threading.current_thread()), range(3))

    parallel.for_each(outer, range(2))  # would deadlock if inner work waited for a full pool
    assert len(inner_threads) == 6
    monkeypatch.setenv("SPINESEG_THREADS", "1")
    order = []
    parallel.for_each(lambda i: order.append((i, threading.current_thread())), range(4))
    assert order == [(i, threading.current_thread()) for i in range(4)]


def test_resampling_gives_the_same_voxels_on_one_thread_and_on_several(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    ct = np.asfortranarray(rng.integers(-1000, 1500, (70, 64, 45), dtype=np.int16))
    small = rng.random((20, 18, 12), dtype=np.float32)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("SPINESEG_THREADS", threads)
        down = resample_array(ct, (35, 30, 19), slab=4)
        up = np.zeros((70, 64, 45), dtype=np.float32)

        def write(index, block, up=up):
            up[index] = block

        upsample_into(small, up.shape, write, slab=4)
        results.append((down, up))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_slab_work_on_a_pool_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("SPINESEG_THREADS", "2")
    parallel.for_each(lambda _: None, range(4))  # the parent's pool exists and has threads
    pid = os.fork()
    if pid == 0:  # the child: would hang on the parent's (threadless) pool
        done = []
        try:
            parallel.for_each(done.append, range(4))
            os._exit(0 if sorted(done) == [0, 1, 2, 3] else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's slab work did not finish in 20 s")
