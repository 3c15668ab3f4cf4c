"""A convolution followed by 2x2 max-pooling, computed as one convolution over 2x2 pixel blocks
(what the compiled CPU step runs for study A's CNN and LeNet; the models themselves are unchanged).

Why: the study models' convolutions have 1 to 16 channels, too few for the CPU's vector units, and
their max-pooling (of 6 channels, channels-last) compiles to loops over those few channels: in
study A's CNN step the first max-pooling's backward alone took a quarter of the time. Rearranged,
the same arithmetic suits them better: with the input cut into 2x2 blocks (blocks_of: C -> 4C
channels, half the height and width), each of the four pixels of a pooling window is one of four
channel groups of a single convolution's output, and the pooling is an element-wise maximum of
those groups. A k x k kernel becomes a (k+1)/2 square one over 4C channels, with 4x the output
channels, zero where the k x k kernel does not reach. That is more multiplications ((k+1)^2/k^2:
1.44x for 5x5, 1.78x for 3x3), so only convolutions of at most NARROW output channels are fused,
whose vector lanes (16 floats) it fills; wider ones (keras_cnn's, fastnet's) stay as they are.

The result is the same function of the same parameters (float rounding aside), and the gradient
goes to the first maximum of each window in row-major order, as max_pool2d sends it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.engine import is_channels_last


NARROW = 16  # output channels; the CPU's vector unit holds 16 floats (AVX-512)


class ConvMaxPool2d(nn.Module):
    """conv then max_pool2d(2), with conv's own weight and bias (the same parameters, same names)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding = conv.padding[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.weight.shape[-1], self.padding
        if (x.shape[-2] + 2 * p - k + 1) % 2 or (x.shape[-1] + 2 * p - k + 1) % 2:  # a row or column the pooling drops
            return F.max_pool2d(F.conv2d(x, self.weight, self.bias, padding=p), 2)
        if p:
            x = F.pad(x, (p, p, p, p))
        bias = None if self.bias is None else self.bias.repeat(4)
        return window_max(F.conv2d(blocks_of(x), block_kernels(self.weight), bias))


def blocks_of(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4*C, H/2, W/2): channel r*C + c is channel c at pixel r = 2*ry + rx of each
    2x2 block. pixel_unshuffle's order (c*4 + r) would do as well, but with C innermost a
    channels-last tensor keeps each pixel's C channels together, and the compiled code vectorizes
    over them (the gradient's way back through pixel_unshuffle's order compiled to a scalar loop)."""
    n, c, h, w = x.shape
    blocks = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
    return blocks.contiguous(memory_format=torch.channels_last) if is_channels_last(x) else blocks


def block_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, k, k), k odd -> (4*O, 4*C, (k+1)/2, (k+1)/2): output channel q*O + o is filter o at the
    pooling window's pixel q = 2*dy + dx, over blocks_of() the input."""
    at_pixel = [F.pad(weight, (dx, 1 - dx, dy, 1 - dy)) for dy in (0, 1) for dx in (0, 1)]  # k+1 square, shifted
    return torch.cat([blocks_of(w.contiguous()) for w in at_pixel])


def window_max(blocks: torch.Tensor) -> torch.Tensor:
    """The maximum of the four channel groups, written so that autograd sends the gradient to the
    first of them that reaches it, as max_pool2d does (torch.maximum would split a tie's gradient
    between its two; MNIST's blank borders make ties common), and a NaN, as there, is the maximum.
    No autograd.Function: one in the graph keeps the compiled step out of AOT autograd's cache (1.3 s
    of compiling in every new process). It works on the channels-last view (N, H, W, C), so that
    the gradient is made in that layout."""
    a, b, c, d = pixels_last(blocks).chunk(4, dim=-1)
    first_a = tops(a, b) & tops(a, c) & tops(a, d)
    first_b = tops(b, c) & tops(b, d)
    top = torch.where(first_a, a, torch.where(first_b, b, torch.where(tops(c, d), c, d)))
    return top.permute(0, 3, 1, 2)


def tops(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Where x, before y in the window, is the maximum of the two as max_pool2d picks it: not below
    y, or NaN where y is not (of two NaNs it picks the later). NaN as x != x: inductor's C++ code
    vectorizes comparisons but not isnan() (which made the CNN's compiled step 1.4 -> 2.9 ms)."""
    return (x >= y) | ((x != x) & (y == y))


def pixels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> the view (N, H, W, C)."""
    return x.permute(0, 2, 3, 1)


def fusable(conv: nn.Module, pool: nn.Module) -> bool:
    """Whether conv then pool is what ConvMaxPool2d computes (hooks on either would be lost)."""
    return (
        not hooked(conv) and not hooked(pool)
        and type(conv) is nn.Conv2d and type(pool) is nn.MaxPool2d and conv.out_channels <= NARROW
        and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2 == 1
        and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
        and _pair(pool.kernel_size) == (2, 2) and _pair(pool.stride) == (2, 2) and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices
    )


def hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def with_conv_max_pools(model: nn.Module) -> tuple[nn.Module, list[tuple[nn.Module, nn.Module]]]:
    """A copy of model whose Sequentials compute each Conv2d, [ReLU,] MaxPool2d(2) as a ConvMaxPool2d
    (then the ReLU: max-pooling and ReLU commute, gradients included), and the pairs (module of
    model, module of the copy) whose train/eval mode the copy must follow. The copy's parameters and
    buffers are model's own; (model, []) when there is nothing to fuse."""
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    fused = copy.deepcopy(model, memo=shared)
    pairs = list(zip(model.modules(), fused.modules()))
    found = False
    for seq in [m for m in fused.modules() if type(m) is nn.Sequential]:  # a subclass may have its own forward
        layers = list(seq)
        for i, conv in enumerate(layers):
            # a plain ReLU only: one in place is left where it is, with its pooling unfused
            relu = i + 2 < len(layers) and type(layers[i + 1]) is nn.ReLU and not layers[i + 1].inplace and not hooked(layers[i + 1])
            pool = i + 1 + relu
            if pool < len(layers) and fusable(conv, layers[pool]):
                seq[i], seq[pool] = ConvMaxPool2d(conv), nn.Identity()
                if relu:  # ReLU after the pooling: the same values, the same gradients
                    seq[i + 1], seq[pool] = nn.Identity(), layers[i + 1]
                found = True
    return (fused, pairs) if found else (model, [])
