"""The network's ONNX graph: traced from the weights, PRelu with one slope rewritten as LeakyRelu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from spineseg.model.network import build_network
from spineseg.model.onnx_export import export_onnx, shared_slopes_as_leaky_relu
from spineseg.model.runtime import OrtNetwork
from tests.conftest import TINY_ARCHITECTURE


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_the_exported_graph_has_no_prelu_and_computes_what_torch_does(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_network(TINY_ARCHITECTURE).eval()
    with torch.no_grad():  # slopes of both signs and sizes, so the negative side is really tested
        for i, module in enumerate(m for m in network.modules() if isinstance(m, torch.nn.PReLU)):
            module.weight.fill_(0.37 if i % 2 else -0.2)
    path = export_onnx(network, 3, tmp_path / "net.onnx")
    ops = _ops(path)
    assert "PRelu" not in ops and "LeakyRelu" in ops
    x = torch.randn(3, 3, 48, 32)
    with torch.no_grad():
        expected = network(x).numpy()
    np.testing.assert_allclose(OrtNetwork(path, parts=1)(x.numpy()), expected, atol=1e-5)


def test_a_prelu_with_a_slope_per_channel_is_left_as_it_is(tmp_path: Path) -> None:
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.PReLU(4),
                                  torch.nn.Conv2d(4, 1, 1), torch.nn.PReLU()).eval()
    torch.onnx.export(network, (torch.rand(1, 3, 8, 8),), str(tmp_path / "net.onnx"), dynamo=False,
                      input_names=["x"], output_names=["logits"])
    assert shared_slopes_as_leaky_relu(tmp_path / "net.onnx") == 1
    assert _ops(tmp_path / "net.onnx").count("PRelu") == 1
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = network(x).numpy()
    np.testing.assert_allclose(OrtNetwork(tmp_path / "net.onnx", parts=1)(x.numpy()), expected, atol=1e-6)
