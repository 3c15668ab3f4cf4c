"""Study D's "TrashNet": a small ResNet of two residual blocks for CIFAR-10 (133,514 params)."""

import torch.nn.functional as F
from torch import nn

from cnnlab.models import features_classifier, register


class Residual(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the input (or its 1x1 conv), then ReLU."""

    def __init__(self, in_c: int, out_c: int, use_1x1conv: bool = False, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.conv3 = nn.Conv2d(in_c, out_c, 1, stride=stride) if use_1x1conv else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.conv3(x) if self.conv3 is not None else x))


@register("trashnet")
def build_trashnet(opts, input_shape, num_classes):
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(3, stride=1, padding=1),
        Residual(32, 64, use_1x1conv=True, stride=2),
        Residual(64, 64),
        nn.AdaptiveAvgPool2d(1),
    )
    return features_classifier(features, nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)))
