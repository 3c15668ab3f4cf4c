"""Study E's tiny model: Conv2d(1,1,3)-MaxPool2-ReLU-Flatten-Linear(1,1)-Sigmoid, 12 params on 1x4x4."""

from torch import nn

from cnnlab.models import flat_size, register


@register("toy")
def build_toy(opts, input_shape, num_classes):
    # one sigmoid output, a probability, as the article writes it: num_classes is not used
    features = nn.Sequential(nn.Conv2d(input_shape[0], 1, 3), nn.MaxPool2d(2), nn.ReLU())
    return nn.Sequential(*features, nn.Flatten(), nn.Linear(flat_size(features, input_shape), 1), nn.Sigmoid())
