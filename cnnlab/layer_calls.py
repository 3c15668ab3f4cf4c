"""One forward pass with hooks on a model's layers: what each layer got and returned, in call order.

The model summary, the FLOP count and forward-check all read a model this way; the model builders'
flat_size shares eval_mode, the block every such pass runs in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerCall:
    name: str  # dotted module name, e.g. "features.0"
    module: nn.Module
    inputs: tuple  # the positional inputs, as the layer got them
    output: object  # what it returned; a tensor is detached and copied, so a later in-place layer leaves it alone


@contextmanager
def eval_mode(model: nn.Module):
    """The model in eval mode inside the block (BatchNorm's running statistics untouched, no dropout);
    every module's own mode back afterwards, a mixed state included."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module without children, each module once."""
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]


def dry_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Zeros of (1, *input_shape) on the model's device, in its floating dtype (float32 without one)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, *input_shape, device=device, dtype=dtype)


def layer_calls(model: nn.Module, x: torch.Tensor, layers: list[tuple[str, nn.Module]] | None = None) -> tuple[list[LayerCall], object]:
    """Run model once on x in eval mode, recording every call of layers ((name, module) pairs, by
    default leaf_modules(model)); returns the calls in order and the model's output.

    The hooks are removed and the modes restored even when the forward fails. Autograd is left as
    the caller set it (the FLOP count needs it on, to see which inputs need a gradient)."""
    calls: list[LayerCall] = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            kept = output.detach().clone() if isinstance(output, torch.Tensor) else output
            calls.append(LayerCall(name, module, inputs, kept))

        return hook

    pairs = leaf_modules(model) if layers is None else layers
    handles = [m.register_forward_hook(hook_for(name)) for name, m in pairs]
    try:
        with eval_mode(model):
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output
