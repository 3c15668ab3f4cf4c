"""Model registry: name -> builder(opts, input_shape (C, H, W), num_classes) -> nn.Module.

Each family file registers its builders with @register; every model returns logits (toy: a sigmoid
probability) and derives its layer sizes from input_shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from cnnlab.errors import ConfigError, first_line
from cnnlab.layer_calls import eval_mode

Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: add a builder to MODELS under name."""

    def add(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return add


def build_model(opts, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the model opts names (a model option object from cnnlab.config) for inputs of input_shape."""
    builder = MODELS.get(opts.name)
    if builder is None:
        raise ConfigError(f"unknown model {opts.name!r}; valid names: {', '.join(sorted(MODELS))}")
    try:
        return builder(opts, tuple(input_shape), num_classes)
    except (TypeError, OverflowError) as e:  # a size past what torch can count (a stored config, which skips the bound)
        raise ConfigError(f"model {opts.name!r} is too large: {first_line(e)}") from None
    except RuntimeError as e:  # a dry forward pass found the input too small for the layers
        first = first_line(e)
        if "can't allocate memory" in first:  # no: its weights do not fit in memory (model.n_feature=1000000)
            raise ConfigError(f"model {opts.name!r} is too large for this machine's memory: {first}") from None
        raise ConfigError(f"model {opts.name!r} cannot take inputs of shape {tuple(input_shape)}: {first}") from None


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def all_params(model: nn.Module) -> int:
    """Number of parameters, trainable or frozen (torchinfo's total)."""
    return sum(p.numel() for p in model.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The module behind torch.compile's wrapper, whose state_dict has the plain keys."""
    return getattr(model, "_orig_mod", model)


def flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of values features outputs for one input of input_shape (a dry forward pass)."""
    with eval_mode(features), torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


def xavier_init(model: nn.Module, zero_bias: bool = False) -> nn.Module:
    """Xavier (Keras: glorot) uniform weights for every Conv2d and Linear; biases zeroed if asked,
    else left at PyTorch's default."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if zero_bias:
                nn.init.zeros_(m.bias)
    return model


def features_classifier(features: nn.Sequential, classifier: nn.Sequential) -> nn.Sequential:
    """A plain stack in two named parts, so layers read as features.0, classifier.1, ..."""
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


# the family files register themselves on import
from cnnlab.models import cnn, fastnet, fc, keras, lenet, resnet, toy  # noqa: E402,F401
