"""The runtime (torch or ONNX Runtime) is chosen per machine by a probe; both give the same masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spineseg.model.runtime as runtime
from spineseg.model.inference import LoadedModel, segment
from spineseg.model.runtime import MAX_PROBE_DIFF, ORT, TORCH, choose_runtime
from tests.conftest import make_phantom

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_CACHE", {})


def _probe(torch_s: float, ort_s: float, diff: float = 0.0, calls: list | None = None):
    def probe() -> dict[str, float]:
        if calls is not None:
            calls.append(1)
        return {TORCH: torch_s, ORT: ort_s, "max_diff": diff}
    return probe


def test_a_faster_agreeing_onnxruntime_is_chosen_and_the_choice_is_kept_on_disk(tmp_path: Path) -> None:
    cache = tmp_path / "runtime.json"
    calls: list = []
    choice = choose_runtime("auto", "cpu", "k1", _probe(1.0, 0.5, calls=calls), ort_installed=True, cache_file=cache)
    assert choice.name == ORT and "2.00x faster" in choice.reason and calls == [1]
    assert json.loads(cache.read_text())["k1"]["name"] == ORT
    runtime._CACHE.clear()  # a new process: the disk cache answers, no probe runs
    again = choose_runtime("auto", "cpu", "k1", _probe(1.0, 5.0, calls=calls), ort_installed=True, cache_file=cache)
    assert again.name == ORT and "cached" in again.reason and calls == [1]


def test_torch_is_kept_when_onnxruntime_is_not_faster_enough_or_disagrees(tmp_path: Path) -> None:
    cache = tmp_path / "runtime.json"
    slow = choose_runtime("auto", "cpu", "a", _probe(1.0, 0.95), ort_installed=True, cache_file=cache)
    assert slow.name == TORCH and "1.05x" in slow.reason
    wrong = choose_runtime("auto", "cpu", "b", _probe(1.0, 0.2, diff=10 * MAX_PROBE_DIFF), ort_installed=True,
                           cache_file=cache)
    assert wrong.name == TORCH and "differs" in wrong.reason


def test_gpu_preference_and_missing_package_rules_need_no_probe(tmp_path: Path) -> None:
    calls: list = []
    probe = _probe(1.0, 0.1, calls=calls)
    kwargs = {"cache_file": tmp_path / "r.json"}
    assert choose_runtime("auto", "cuda", "g", probe, ort_installed=True, **kwargs).name == TORCH
    assert choose_runtime("torch", "cpu", "t", probe, ort_installed=True, **kwargs).name == TORCH
    assert choose_runtime("auto", "cpu", "n", probe, ort_installed=False, **kwargs).reason == \
        "onnxruntime is not installed"
    assert choose_runtime("onnxruntime", "cpu", "o", probe, ort_installed=True, **kwargs).name == ORT
    assert "unknown" in choose_runtime("tensorrt", "cpu", "u", probe, ort_installed=True, **kwargs).reason
    assert calls == []


def test_a_failing_probe_falls_back_to_torch(tmp_path: Path) -> None:
    def probe() -> dict[str, float]:
        raise RuntimeError("export failed\nmore")

    choice = choose_runtime("auto", "cpu", "f", probe, ort_installed=True, cache_file=tmp_path / "r.json")
    assert choice.name == TORCH and "export failed" in choice.reason


def test_onnxruntime_and_torch_give_the_same_segmentation(tiny_model: Path) -> None:
    phantom, _ = make_phantom(shape=(60, 50, 20), spacing=(0.8, 0.8, 2.0))
    on_torch = LoadedModel.from_folder(tiny_model, runtime="torch")
    on_ort = LoadedModel.from_folder(tiny_model, runtime="onnxruntime")
    assert on_torch.session is None and on_ort.session is not None
    a, b = segment(phantom, on_torch), segment(phantom, on_ort)
    assert b.inference["runtime"] == ORT and a.inference["runtime"] == TORCH
    assert b.inference["dtype"] == "float32" and "onnxruntime" in b.inference["reason"]
    assert np.abs(a.model_grid - b.model_grid).max() < 1e-4
    np.testing.assert_array_equal(a.mask, b.mask)


def test_a_batch_split_over_concurrent_sessions_gives_the_whole_batch_s_logits(tiny_model: Path) -> None:
    from spineseg.model.runtime import OrtNetwork

    path = LoadedModel.from_folder(tiny_model, runtime="onnxruntime").session.path
    batch = np.random.default_rng(0).random((5, 3, 48, 32), dtype=np.float32)
    whole = OrtNetwork(path, parts=1)(batch)
    three = OrtNetwork(path, parts=3)
    assert len(three.sessions) == 3 and whole.shape == (5, 1, 48, 32)
    np.testing.assert_allclose(three(batch), whole, atol=1e-6)  # sub-batches of 2, 2 and 1 slices
    np.testing.assert_allclose(three(batch[:1]), whole[:1], atol=1e-6)  # one slice: one session


def test_replacing_the_network_drops_the_onnx_session(tiny_model: Path) -> None:
    import torch

    loaded = LoadedModel.from_folder(tiny_model, runtime="onnxruntime")
    loaded.network = torch.nn.Conv2d(3, 1, 1)
    assert loaded.session is None and loaded.runtime.name == TORCH


def test_a_known_onnxruntime_choice_loads_without_importing_torch(tiny_model: Path, tmp_path: Path) -> None:
    LoadedModel.from_folder(tiny_model, runtime="onnxruntime")  # exports the graph into the cache
    phantom, _ = make_phantom(shape=(40, 36, 12), spacing=(0.8, 0.8, 3.0))
    np.save(tmp_path / "ct.npy", phantom.array)
    code = (
        "import sys, numpy as np\n"
        "from spineseg.imaging.volume import Volume\n"
        "from spineseg.model.inference import LoadedModel, segment\n"
        f"loaded = LoadedModel.from_folder({str(tiny_model)!r})\n"
        f"seg = segment(Volume(np.load({str(tmp_path / 'ct.npy')!r}), np.diag([0.8, 0.8, 3.0, 1.0])), loaded)\n"
        f"np.save({str(tmp_path / 'mask.npy')!r}, seg.mask)\n"
        "print(loaded.runtime.name, 'torch' in sys.modules)\n"
    )
    env = dict(os.environ, SPINESEG_RUNTIME="onnxruntime")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["onnxruntime", "False"]
    expected = segment(phantom, LoadedModel.from_folder(tiny_model, runtime="torch")).mask
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), expected)


def test_a_requested_torch_runtime_says_so_in_the_summary(tiny_model: Path) -> None:
    loaded = LoadedModel.from_folder(tiny_model, runtime="torch")
    seg = segment(make_phantom(shape=(40, 36, 12), spacing=(0.8, 0.8, 3.0))[0], loaded)
    assert seg.inference["runtime"] == TORCH and seg.inference["runtime_reason"] == "torch requested"


def test_the_probe_time_is_the_least_disturbed_call() -> None:
    durations = iter([0.0, 0.5, 0.02, 0.3])  # warm-up, then one call slowed by other work

    def call() -> None:
        import time

        end = time.perf_counter() + next(durations)
        while time.perf_counter() < end:
            pass

    assert 0.02 <= runtime.time_call(call, repeats=3) < 0.3
