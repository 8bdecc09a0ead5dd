"""Our plain-torch UNet2d against MONAI's UNet: same state-dict keys, same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spineseg.model.network import DEFAULT_ARCHITECTURE, build_monai_network, build_network, load_weights
from spineseg.model.unet2d import UNet2d
from tests.conftest import TINY_ARCHITECTURE

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "spineseg" / "default_model" / "weights.safetensors"


@pytest.mark.parametrize("architecture",
                         [TINY_ARCHITECTURE, DEFAULT_ARCHITECTURE, TINY_ARCHITECTURE | {"norm": "batch"}],
                         ids=["tiny", "default", "tiny-batch-norm"])
def test_same_keys_and_outputs_as_monai_on_random_weights(architecture: dict) -> None:
    torch.manual_seed(0)
    ours, theirs = build_network(architecture).eval(), build_monai_network(architecture).eval()
    assert isinstance(ours, UNet2d)
    with torch.no_grad():  # learnt-looking batch statistics and affine terms, not the identity defaults
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    theirs_state = theirs.state_dict()
    assert list(ours.state_dict()) == list(theirs_state)
    ours.load_state_dict(theirs_state, strict=True)
    x = torch.randn(2, architecture["in_channels"], 64, 48)
    with torch.inference_mode():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_shipped_weights_give_monai_outputs() -> None:
    ours = load_weights(build_network(DEFAULT_ARCHITECTURE), DEFAULT_WEIGHTS).eval()
    theirs = load_weights(build_monai_network(DEFAULT_ARCHITECTURE), DEFAULT_WEIGHTS).eval()
    torch.manual_seed(1)
    x = torch.rand(3, 3, 96, 80)
    with torch.inference_mode():
        a, b = ours(x), theirs(x)
    assert a.shape == (3, 1, 96, 80)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)


def test_other_variants_go_to_monai() -> None:
    architecture = dict(TINY_ARCHITECTURE, num_res_units=0)
    assert not isinstance(build_network(architecture), UNet2d)


def test_an_unknown_norm_is_refused_with_its_name() -> None:
    from spineseg.errors import InputError

    with pytest.raises(InputError, match="unsupported norm 'group'"):
        build_network(TINY_ARCHITECTURE | {"norm": "group"})
