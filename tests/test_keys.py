"""The torch references expose exactly the original repositories' state_dict keys and shapes.

The expected lists in tests/data/ were dumped from the ORIGINAL code (see each file's "source"),
not from ours, so a renamed attribute or a changed layer shape fails here.
"""
import json

import numpy as np
import pytest
import torch

import rsport
from rsport.registry import resolve
from tests.conftest import DATA, MODELS


def _expected(name):
    return json.loads((DATA / f"{name}_original_keys.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_torch_keys_and_shapes_equal_original(name):
    spec = rsport.get(name)
    model = resolve(spec.torch_entry)(**spec.kwargs)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    expected = _expected(name)["keys"]
    missing = sorted({k for k, _ in expected} - {k for k, _ in ours})
    extra = sorted({k for k, _ in ours} - {k for k, _ in expected})
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    assert ours == expected  # same order and shapes


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_equals_original(name):
    spec = rsport.get(name)
    model = resolve(spec.torch_entry)(**spec.kwargs)
    assert sum(p.numel() for p in model.parameters()) == _expected(name)["num_parameters"]


@pytest.mark.parametrize("name", MODELS)
def test_paddle_trainable_parameters_match_torch(name):
    """Paddle keeps BN statistics as (non-trainable) parameters: count the trainable ones."""
    spec = rsport.get(name)
    model = resolve(spec.paddle_entry)(**spec.kwargs)
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    assert trainable == _expected(name)["num_parameters"]


def test_torchvision_resnet50_state_dict_loads_strictly():
    """A torchvision resnet50 ImageNet state_dict (fc aside) loads into the encoder strictly."""
    from torch_ref.models.resnet import ResNet

    expected = json.loads((DATA / "torchvision_resnet50_keys.json").read_text())["keys"]
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) if k.rpartition(".")[2] != "num_batches_tracked"
             else torch.tensor(7) for k, shape in expected if not k.startswith("fc.")}
    model = ResNet()
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert {k for k, _ in expected} - set(model.state_dict()) == {"fc.weight", "fc.bias"}
