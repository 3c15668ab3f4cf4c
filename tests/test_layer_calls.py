"""layer_calls: one forward pass recording each layer's call, in order, leaving the model as it was."""

import pytest
import torch
from torch import nn

from cnnlab.layer_calls import dry_input, eval_mode, layer_calls, leaf_modules
from cnnlab.models import flat_size


def mixed_model() -> nn.Sequential:
    """Training mode, but for a BatchNorm in eval mode (frozen statistics)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.5)))
    model[2][0].eval()
    return model


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_every_leaf_call_in_order_with_its_inputs_and_output():
    torch.manual_seed(0)  # unseeded, no output was negative in about 1 run in 80, and the in-place ReLU check failed
    model = mixed_model()
    x = torch.randn(2, 3)
    calls, output = layer_calls(model, x)
    assert [(c.name, type(c.module).__name__) for c in calls] == [
        ("0", "Linear"), ("1", "ReLU"), ("2.0", "BatchNorm1d"), ("2.1", "Dropout"),
    ]
    assert calls[0].inputs[0] is x and calls[0].module is model[0]
    # the in-place ReLU rewrote the Linear's output tensor; the recorded copy is what the Linear returned
    assert (calls[0].output < 0).any() and torch.equal(calls[1].output, calls[0].output.clamp(min=0))
    assert torch.equal(output, calls[-1].output)  # dropout off: eval mode
    assert not calls[0].output.requires_grad and calls[1].inputs[0].requires_grad  # autograd as the caller left it


def test_only_the_given_layers_each_call_recorded():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    with torch.no_grad():
        calls, _ = layer_calls(model, torch.randn(1, 2), [("act", relu)])
    assert [c.name for c in calls] == ["act", "act"] and not calls[0].inputs[0].requires_grad
    assert [name for name, _ in leaf_modules(model)] == ["0", "1", "2"]  # a shared module once


def test_modes_and_hooks_come_back_even_when_the_forward_fails():
    model = mixed_model()
    before = modes(model)
    layer_calls(model, torch.randn(2, 3))
    assert modes(model) == before
    with pytest.raises(RuntimeError):
        layer_calls(model, torch.randn(2, 5))  # the Linear takes 3 features
    assert modes(model) == before and not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(modes(model))
        raise RuntimeError
    assert modes(model) == before


def test_dry_input_follows_the_models_device_and_dtype():
    assert dry_input(nn.Conv2d(1, 2, 3).double(), (1, 5, 5)).dtype == torch.float64
    x = dry_input(nn.ReLU(), (3, 4))  # no parameters: float32 on the CPU
    assert (x.shape, x.dtype, x.device.type) == ((1, 3, 4), torch.float32, "cpu") and not x.any()


def test_flat_size_leaves_a_mixed_mode_as_it_was():
    features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    features[1].eval()
    before = modes(features)
    assert flat_size(features, (1, 6, 6)) == 2 * 4 * 4
    assert modes(features) == before and features[1].num_batches_tracked == 0
