"""The inference dtype is chosen by what the machine runs fast, whatever the card asks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import spineseg.model.precision as precision
from spineseg.model.inference import LoadedModel, segment
from spineseg.model.precision import choose_precision, native_support
from tests.conftest import TINY_ARCHITECTURE, make_phantom

CPU = torch.device("cpu")
NO_BF16 = frozenset({"avx", "avx2", "fma"})
BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_CACHE", {})


def _timer(seconds: dict[torch.dtype, float], calls: list | None = None):
    def timer(network, batch, dtype):
        if calls is not None:
            calls.append(dtype)
        return seconds[dtype]
    return timer


def test_bf16_is_refused_on_a_cpu_without_native_bf16_and_no_probe_runs() -> None:
    calls: list = []
    choice = choose_precision(torch.nn.Identity(), CPU, "bfloat16", TINY_ARCHITECTURE,
                              timer=_timer({}, calls), flags=NO_BF16)
    assert choice.name == "float32" and "avx512_bf16" in choice.reason and calls == []


def test_bf16_is_used_where_native_and_the_probe_shows_it_faster() -> None:
    timer = _timer({torch.float32: 1.0, torch.bfloat16: 0.5})
    choice = choose_precision(torch.nn.Identity(), CPU, "bfloat16", TINY_ARCHITECTURE, timer=timer, flags=BF16)
    assert choice.name == "bfloat16" and choice.dtype == torch.bfloat16
    assert "avx512_bf16" in choice.reason and "2.00x" in choice.reason
    assert dict(choice.probe_s) == {"float32": 1.0, "bfloat16": 0.5}


def test_native_bf16_that_is_not_faster_in_the_probe_is_refused() -> None:
    timer = _timer({torch.float32: 1.0, torch.bfloat16: 0.95})
    choice = choose_precision(torch.nn.Identity(), CPU, "auto", TINY_ARCHITECTURE, timer=timer, flags=BF16)
    assert choice.name == "float32" and "probe" in choice.reason


def test_float32_cards_and_unknown_values_run_float32() -> None:
    assert choose_precision(torch.nn.Identity(), CPU, "float32", TINY_ARCHITECTURE).name == "float32"
    odd = choose_precision(torch.nn.Identity(), CPU, "int4", TINY_ARCHITECTURE)
    assert odd.name == "float32" and "int4" in odd.reason


def test_float16_is_never_used_on_a_cpu() -> None:
    assert native_support("float16", CPU, BF16)[0] is False


def test_the_choice_is_cached_per_process() -> None:
    calls: list = []
    timer = _timer({torch.float32: 1.0, torch.bfloat16: 0.5}, calls)
    for _ in range(3):
        choose_precision(torch.nn.Identity(), CPU, "bfloat16", TINY_ARCHITECTURE, timer=timer, flags=BF16)
    assert calls == [torch.float32, torch.bfloat16]


def test_a_bf16_card_on_this_machine_never_runs_slower_than_float32(tiny_model: Path) -> None:
    card = json.loads((tiny_model / "card.json").read_text())
    card["inference_dtype"] = "bfloat16"
    (tiny_model / "card.json").write_text(json.dumps(card))
    loaded = LoadedModel.from_folder(tiny_model)
    if native_support("bfloat16", CPU)[0]:
        assert loaded.precision.name in ("float32", "bfloat16")
    else:
        assert loaded.precision.name == "float32"
    seg = segment(make_phantom()[0], loaded)
    assert seg.inference == {"device": "cpu", "dtype": loaded.precision.name, "reason": loaded.precision.reason,
                             "runtime": loaded.runtime.name, "runtime_reason": loaded.runtime.reason,
                             "plane_share": 1.0}  # the tiny network normalises by instance: the whole plane


def test_the_real_probe_times_both_formats(tiny_model: Path) -> None:
    loaded = LoadedModel.from_folder(tiny_model)
    choice = choose_precision(loaded.network, CPU, "bfloat16", TINY_ARCHITECTURE, flags=BF16)
    assert {name for name, _ in choice.probe_s} == {"float32", "bfloat16"}
    assert choice.name in ("float32", "bfloat16")


def test_cuda_formats_follow_the_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(precision, "probe_batch", lambda architecture, device: torch.zeros(1))
    assert native_support("bfloat16", gpu)[0] is False
    assert native_support("float16", gpu)[0] is True
    timer = _timer({torch.float32: 1.0, torch.float16: 0.4})
    choice = choose_precision(torch.nn.Identity(), gpu, "auto", TINY_ARCHITECTURE, timer=timer)
    assert choice.name == "float16" and "7.5" in choice.reason
    refused = choose_precision(torch.nn.Identity(), gpu, "bfloat16", TINY_ARCHITECTURE, timer=timer)
    assert refused.name == "float32" and "7.5" in refused.reason
