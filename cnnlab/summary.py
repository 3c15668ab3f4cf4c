"""A torchinfo-style model summary from forward hooks on leaf modules (study E); prints nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.layer_calls import LayerCall, dry_input, layer_calls
from cnnlab.models import all_params, count_params

# layers whose output size follows the convolution rule, and their number of spatial dims
_RULE_DIMS = {
    nn.Conv1d: 1, nn.MaxPool1d: 1, nn.AvgPool1d: 1,
    nn.Conv2d: 2, nn.MaxPool2d: 2, nn.AvgPool2d: 2,
}


@dataclass
class LayerRow:
    name: str  # dotted module name, e.g. "features.0"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple  # without the batch dim, e.g. (6, 24, 24)
    params: int  # parameters of this layer, as torchinfo's Param # counts them: frozen ones too
    frozen: int  # of those, the ones that do not learn (requires_grad False: fastnet's whitening)
    rule: str  # the output-size rule worked out per spatial dim (conv and pool layers), else ""


def conv_output_size(n: int, k: int, s: int = 1, p: int = 0, d: int = 1, ceil: bool = False) -> int:
    """floor((n + 2p - d(k-1) - 1) / s) + 1 (ceil instead of floor for pools with ceil_mode, less the
    last window when it would start in the right padding, as PyTorch drops it)."""
    rounding = math.ceil if ceil else math.floor
    out = rounding((n + 2 * p - d * (k - 1) - 1) / s) + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


def _per_dim(value, dims: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _rule_text(n: int, k: int, s: int, p, d: int, ceil: bool) -> str:
    if p == "same":  # PyTorch allows it with stride 1 only: the size is kept
        return f"{n} -> 'same' padding, stride 1 = {n}"
    p = 0 if p == "valid" else p
    kernel = f"{k}" if d == 1 else f"{d}*({k}-1) - 1"
    rounding = "ceil" if ceil else "floor"
    out = conv_output_size(n, k, s, p, d, ceil)
    if ceil and math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1 != out:
        return f"{n} -> ceil(({n} + 2*{p} - {kernel}) / {s}) + 1 - 1 = {out} (a last window would start in the padding)"
    return f"{n} -> {rounding}(({n} + 2*{p} - {kernel}) / {s}) + 1 = {out}"


def output_rule(module: nn.Module, input_size: tuple[int, ...]) -> str:
    """The output-size rule of a conv/pool layer for the given spatial input size, else ""."""
    dims = _RULE_DIMS.get(type(module))
    if dims is None:
        return ""
    padding = module.padding if isinstance(module.padding, str) else _per_dim(module.padding, dims)
    params = zip(
        input_size[-dims:],
        _per_dim(module.kernel_size, dims),
        _per_dim(module.stride, dims),
        (padding,) * dims if isinstance(padding, str) else padding,
        _per_dim(getattr(module, "dilation", 1), dims),  # AvgPool has no dilation
    )
    ceil = getattr(module, "ceil_mode", False)
    texts = [_rule_text(*dim, ceil) for dim in params]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"{axis}: {text}" for axis, text in zip("HW", texts))


def _shape(output) -> tuple:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, (tuple, list)):
        return tuple(_shape(o) for o in output)
    return ()


def _row(call: LayerCall) -> LayerRow:
    first = call.inputs[0] if call.inputs and isinstance(call.inputs[0], torch.Tensor) else None
    rule = output_rule(call.module, tuple(first.shape[2:])) if first is not None else ""
    params = all_params(call.module)
    return LayerRow(call.name, type(call.module).__name__, _shape(call.output), params, params - count_params(call.module), rule)


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[LayerRow], int]:
    """One forward pass on zeros of (1, *input_shape) in eval mode; rows per leaf module call, and
    the total of trainable parameters (a run's params). Training modes are restored afterwards."""
    with torch.no_grad():
        calls, _ = layer_calls(model, dry_input(model, input_shape))
    return [_row(call) for call in calls], count_params(model)
