"""A fast CIFAR-10 network in the style of KellerJordan's airbench94 (configs/cifar10_fast.yaml).

A frozen 2x2 patch-whitening convolution, then three conv groups (conv3x3-maxpool-BN-GELU-conv3x3-
BN-GELU, widths 64/256/256 by default), a global max-pool and a bias-free linear layer whose logits
are scaled down (by 1/9). BatchNorm scales are fixed at 1 (only the shifts learn) and convolutions
start close to the identity, which lets it train at very high learning rates.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models import flat_size, register

WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues before dividing by their square root


def batch_norm(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, momentum=momentum, eps=eps)
    bn.weight.requires_grad_(False)  # the scale stays 1: only the shift learns
    return bn


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():  # the first c_in filters start as the identity, the rest at PyTorch's default
        nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


def conv_group(c_in: int, c_out: int, bn_momentum: float, bn_eps: float) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out, bn_momentum, bn_eps), nn.GELU(),
        conv3x3(c_out, c_out), batch_norm(c_out, bn_momentum, bn_eps), nn.GELU(),
    )


class FastNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: list[int], bn_momentum: float, scale: float, bn_eps: float = 1e-12):
        super().__init__()
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * 4, 2, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data by init_from_data
        nn.init.zeros_(self.whiten.bias)
        groups, c = [], self.whiten.out_channels
        for width in widths:
            groups.append(conv_group(c, width, bn_momentum, bn_eps))
            c = width
        self.body = nn.Sequential(nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, num_classes, bias=False)
        self.scale = scale

    def forward(self, x):
        return self.head(self.body(self.whiten(x))) * self.scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from prepared training images (N, C, H, W): the eigenvectors
        of the 2x2 patches' covariance, each divided by the square root of its eigenvalue, and
        their negatives (so the GELU after it keeps both signs)."""
        c = images.shape[1]
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; columns are the vectors
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + WHITEN_EPS).unsqueeze(1)).flip(0)
        filters = filters.reshape(c * 4, c, 2, 2)
        weight = self.whiten.weight
        weight.copy_(torch.cat([filters, -filters]).to(weight.dtype))


@register("fastnet")
def build_fastnet(opts, input_shape, num_classes):
    model = FastNet(input_shape[0], num_classes, list(opts.widths), opts.bn_momentum, opts.scale, opts.bn_eps)
    flat_size(nn.Sequential(model.whiten, model.body), input_shape)  # too many pools for the image: one error line
    return model
