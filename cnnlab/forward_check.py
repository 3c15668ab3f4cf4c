"""Redo a model's forward pass by hand, in plain NumPy, and compare it with PyTorch layer by layer.

The articles teach a CNN by recomputing its output from the weights: a sliding window of sums of
products plus a bias for each convolution, the activation, max or average pooling, flatten and a
matrix product for each linear layer. `check()` does the same for a whole model: PyTorch runs the
model once (forward hooks record every layer's output), then NumPy recomputes the chain from the same
input in float64, each layer fed by NumPy's own previous output, reading the weights afresh.

Covered: the layer types in COVERED, inside nn.Sequential containers, i.e. every layer of the fc,
cnn, lenet, lenet5_classic, keras_cnn and toy models. Anything else (BatchNorm2d, residual blocks,
adaptive pooling, ...) is refused up front with a NotCovered error that names it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.layer_calls import layer_calls

# the largest difference from PyTorch accepted per layer, relative to the layer's largest output where
# that is above 1: float32 keeps about 7 digits, so an output of 1,000 is only good to about 1e-4 itself
TOLERANCE = 1e-4
CHUNK = 500  # images per pass (see check)


class NotCovered(CnnlabError):
    """The model holds a layer (or a layer option) the NumPy recomputation does not implement.
    Exit 2, as a usage error: exit 1 is kept for a layer that differs."""

    exit_code = 2


@dataclass
class LayerCheck:
    name: str  # dotted module name, e.g. "features.0"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple  # without the batch dim
    max_abs_diff: float  # between NumPy's and PyTorch's output of this layer
    largest: float = 0.0  # the largest finite |PyTorch output| of this layer

    @property
    def tolerance(self) -> float:
        return TOLERANCE * max(1.0, self.largest)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


# ---------------------------------------------------------------------------- the layers, by hand
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H', W', kh, kw): every kernel-sized window, stepping by stride."""
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _conv_padding(m: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a Conv2d, 'same' and 'valid' included."""
    if m.padding == "valid":
        return 0, 0, 0, 0
    if m.padding == "same":  # PyTorch puts the odd pixel at the end
        kh, kw = (d * (k - 1) for d, k in zip(m.dilation, m.kernel_size))
        return kh // 2, kh - kh // 2, kw // 2, kw - kw // 2
    ph, pw = _pair(m.padding)
    return ph, ph, pw, pw


def conv2d(m: nn.Conv2d, x: np.ndarray) -> np.ndarray:
    """Each output pixel: the sum of products of a kernel-sized input window with the filter, plus bias."""
    w = _np(m.weight)  # (out, in, kh, kw)
    win = _windows(_pad(x, *_conv_padding(m)), m.kernel_size, m.stride)  # (N, in, H', W', kh, kw)
    out = np.einsum("nchwij,ocij->nohw", win, w)
    return out + _np(m.bias).reshape(1, -1, 1, 1) if m.bias is not None else out


def max_pool2d(m: nn.MaxPool2d, x: np.ndarray) -> np.ndarray:
    p = _pair(m.padding)
    win = _windows(_pad(x, p[0], p[0], p[1], p[1], -np.inf), _pair(m.kernel_size), _pair(m.stride or m.kernel_size))
    return win.max(axis=(-2, -1))


def avg_pool2d(m: nn.AvgPool2d, x: np.ndarray) -> np.ndarray:
    p = _pair(m.padding)  # padded zeros count in the mean (count_include_pad, checked in _refusal)
    win = _windows(_pad(x, p[0], p[0], p[1], p[1]), _pair(m.kernel_size), _pair(m.stride or m.kernel_size))
    return win.mean(axis=(-2, -1))


def zero_pad2d(m: nn.ZeroPad2d, x: np.ndarray) -> np.ndarray:
    left, right, top, bottom = m.padding
    return _pad(x, top, bottom, left, right)


def linear(m: nn.Linear, x: np.ndarray) -> np.ndarray:
    out = x @ _np(m.weight).T
    return out + _np(m.bias) if m.bias is not None else out


COVERED = {
    nn.Conv2d: conv2d,
    nn.MaxPool2d: max_pool2d,
    nn.AvgPool2d: avg_pool2d,
    nn.ZeroPad2d: zero_pad2d,
    nn.Linear: linear,
    nn.ReLU: lambda m, x: np.maximum(x, 0.0),
    nn.Sigmoid: lambda m, x: 1.0 / (1.0 + np.exp(-x)),
    nn.Tanh: lambda m, x: np.tanh(x),
    nn.Flatten: lambda m, x: x.reshape(x.shape[0], -1),
    nn.Dropout: lambda m, x: x,  # identity in eval mode, which is how the check runs
    nn.Identity: lambda m, x: x,
}


def covered_names() -> list[str]:
    return [t.__name__ for t in COVERED]


# ---------------------------------------------------------------------------- walking the model
def _refusal(m: nn.Module) -> str | None:
    """Why a layer of a covered type is still not covered (an option the NumPy code lacks), or None."""
    if isinstance(m, nn.Conv2d) and (m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros"):
        return "Conv2d with groups, dilation or non-zero padding mode"
    if isinstance(m, nn.MaxPool2d) and (m.ceil_mode or _pair(m.dilation) != (1, 1) or m.return_indices):
        return "MaxPool2d with ceil_mode, dilation or return_indices"
    if isinstance(m, nn.AvgPool2d) and (m.ceil_mode or not m.count_include_pad or m.divisor_override):
        return "AvgPool2d with ceil_mode, count_include_pad=False or divisor_override"
    if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
        return "Flatten other than Flatten(1, -1)"
    return None


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in order, through nested nn.Sequential containers.

    Raises NotCovered naming every layer the NumPy recomputation cannot redo.
    """
    found: list[tuple[str, nn.Module]] = []
    missing: list[str] = []

    def walk(prefix: str, module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                walk(f"{prefix}.{name}" if prefix else name, child)
        elif type(module) in COVERED and _refusal(module) is None:
            found.append((prefix, module))
        else:
            missing.append(f"{prefix or 'the model'} ({_refusal(module) or type(module).__name__})")

    walk("", model)
    if missing:
        raise NotCovered(
            f"forward-check does not cover {', '.join(missing)}; "
            f"it covers {', '.join(covered_names())} inside nn.Sequential containers"
        )
    return found


def torch_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """PyTorch's output of every layer of layers(model), in eval mode, from one real forward pass."""
    named = layers(model)
    with torch.no_grad():
        calls, final = layer_calls(model, x, named)
    if [call.name for call in calls] != [name for name, _ in named] or not _same(final, calls[-1].output):
        raise NotCovered("forward-check covers models whose forward runs their layers once each, in order")
    return [call.output for call in calls]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b hold the same values, NaN where the other has NaN too (a diverged run's weights)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)


def _max_abs_diff(t: torch.Tensor, n: np.ndarray) -> float:
    """The largest |t - n|; a NaN or infinity in both at the same place agrees (NaN - NaN is NaN)."""
    t = _np(t)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, replaced below; no warning on stderr
        diff = np.where((t == n) | (np.isnan(t) & np.isnan(n)), 0.0, np.abs(t - n))
    return float(diff.max()) if diff.size else 0.0


def numpy_outputs(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Every layer's output recomputed in NumPy (float64) from x and the model's current weights."""
    out, h = [], _np(x)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are results as PyTorch's are, not warnings
        for _, module in layers(model):
            h = COVERED[type(module)](module, h)
            out.append(h)
    return out


def compare(model: nn.Module, torch_outs: list[torch.Tensor], numpy_outs: list[np.ndarray]) -> list[LayerCheck]:
    rows = []
    for (name, module), t, n in zip(layers(model), torch_outs, numpy_outs):
        if tuple(t.shape) != n.shape:  # a wrong shape is as wrong as it gets
            diff = float("inf")
        else:
            diff = _max_abs_diff(t, n)
        finite = t.detach().abs()[torch.isfinite(t)]
        largest = float(finite.max()) if finite.numel() else 0.0
        rows.append(LayerCheck(name, type(module).__name__, tuple(t.shape[1:]), diff, largest))
    return rows


def check(model: nn.Module, x: torch.Tensor) -> tuple[list[LayerCheck], torch.Tensor, np.ndarray]:
    """Both passes on the CPU; returns per-layer checks and the two final outputs (PyTorch, NumPy).
    CHUNK images at a time: every layer's output is kept in float32 and float64, which for 10,000
    CIFAR-sized images through keras_cnn would be tens of GB."""
    model = model.cpu().to(memory_format=torch.contiguous_format)
    x = x.detach().cpu().float().contiguous()
    rows, finals_t, finals_n = None, [], []
    for part in x.split(CHUNK) or (x,):
        t = torch_outputs(model, part)
        n = numpy_outputs(model, part)
        part_rows = compare(model, t, n)
        rows = part_rows if rows is None else [
            dataclasses.replace(r, max_abs_diff=_larger(r.max_abs_diff, p.max_abs_diff), largest=max(r.largest, p.largest))
            for r, p in zip(rows, part_rows)
        ]
        finals_t.append(t[-1])
        finals_n.append(n[-1])
    return rows, torch.cat(finals_t), np.concatenate(finals_n)


def _larger(a: float, b: float) -> float:
    """The larger difference, NaN (a value NumPy and PyTorch disagree on) the largest of all, as for
    np.max over one batch: max(0.0, nan) is 0.0, which let a chunk's NaN pass."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def first_failure(rows: list[LayerCheck]) -> LayerCheck | None:
    return next((r for r in rows if not r.ok), None)
