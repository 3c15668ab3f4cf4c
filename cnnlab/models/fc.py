"""Fully connected nets: study A's FC2Layer (hidden [8, 8]) and study B's Linear(784,1000) net."""

import math

from torch import nn

from cnnlab.models import register


@register("fc")
def build_fc(opts, input_shape, num_classes):
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in opts.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
