"""FLOPs of one training sample, counted layer by layer from the model (forward hooks, one dry pass).

A FLOP is one multiply or one add, so a multiply-accumulate is 2 (torch.utils.flop_counter's
convention). Per layer, for one sample:

- Conv2d: 2 * (C_in / groups) * kH * kW * C_out * H_out * W_out forward; backward is one such
  product for the weight gradient plus one for the input gradient, which the first layer skips
  because its input needs no gradient. Linear likewise with 2 * in * out. Bias adds are not counted.
- MaxPool / AvgPool: one compare or add per window element of each output value (k*k per output);
  adaptive average pooling one add per input value.
- BatchNorm (training): 5 per value (mean, variance, normalize, scale, shift); ReLU 1; Sigmoid and
  Tanh 4; GELU 8 (an erf and the products around it).
- Backward of every layer other than Conv/Linear is counted as equal to its forward: an
  approximation, but these layers are a small share of the total for every model here.

Functional ops inside a module's forward (the residual add) and the optimizer step (per step, not
per sample) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.layer_calls import LayerCall, dry_input, layer_calls

_POINTWISE = {nn.ReLU: 1, nn.Sigmoid: 4, nn.Tanh: 4, nn.GELU: 8, nn.BatchNorm1d: 5, nn.BatchNorm2d: 5}


@dataclass
class LayerFlops:
    name: str  # dotted module name, e.g. "features.0"
    kind: str  # class name, e.g. "Conv2d"
    forward: int  # FLOPs of the forward pass, one sample
    backward: int  # FLOPs of the backward pass, one sample

    @property
    def training(self) -> int:
        return self.forward + self.backward


def _forward_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, bool]:
    """(forward FLOPs for one sample, whether it is a matrix-product layer)."""
    n_out = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2 * (module.in_channels // module.groups) * kh * kw * n_out, True
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features, True
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return kh * kw * n_out, False
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return inp[0].numel(), False
    for kind, per_value in _POINTWISE.items():
        if isinstance(module, kind):
            return per_value * n_out, False
    return 0, False  # Flatten, Dropout, identity-like layers


def _layer_flops(call: LayerCall) -> LayerFlops:
    module, inp = call.module, call.inputs[0]
    fwd, matmul = _forward_flops(module, inp, call.output)
    if matmul:  # weight gradient when the layer learns; input gradient when something upstream does
        bwd = fwd * (int(module.weight.requires_grad) + int(inp.requires_grad))
    else:
        bwd = fwd
    return LayerFlops(call.name, type(module).__name__, fwd, bwd)


def count_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerFlops]:
    """Forward and backward FLOPs of every leaf layer for one input of input_shape (no batch dim)."""
    calls, _ = layer_calls(model, dry_input(model, input_shape))  # autograd on: inputs tell if they need a gradient
    return [_layer_flops(call) for call in calls]


def training_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one training sample (forward + backward) of model on inputs of input_shape."""
    return sum(r.training for r in count_layers(model, input_shape))


def matmul_flops(n: int) -> int:
    """FLOPs of an n x n by n x n matrix product (2 n^3)."""
    return 2 * n**3
