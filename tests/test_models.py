"""The model registry: exact parameter counts, output shapes, logits, LeNet options and init."""

import math
import typing

import pytest
import torch
from torch import nn

from cnnlab import config as C
from cnnlab.errors import ConfigError
from cnnlab.models import MODELS, build_model, count_params

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)

# every model with its default options (toy has its own input shape and single output)
DEFAULTS = {
    "fc": C.FCModel(name="fc"),
    "cnn": C.CNNModel(name="cnn"),
    "lenet": C.LeNetModel(name="lenet"),
    "lenet5_classic": C.LeNet5ClassicModel(name="lenet5_classic"),
    "trashnet": C.TrashNetModel(name="trashnet"),
    "keras_cnn": C.KerasCNNModel(name="keras_cnn"),
    "fastnet": C.FastNetModel(name="fastnet"),
}


@pytest.mark.parametrize(
    "opts, shape, expected",
    [
        (C.FCModel(name="fc", hidden=[8, 8]), MNIST, 6_442),
        (C.FCModel(name="fc", hidden=[1000]), MNIST, 795_010),
        (C.CNNModel(name="cnn", n_feature=6), MNIST, 6_422),
        (C.LeNetModel(name="lenet"), MNIST, 61_706),
        (C.LeNet5ClassicModel(name="lenet5_classic"), MNIST, 61_706),
        (C.TrashNetModel(name="trashnet"), CIFAR, 133_514),
        (C.KerasCNNModel(name="keras_cnn"), CIFAR, 1_250_858),
        (C.KerasCNNModel(name="keras_cnn", dropout=False), CIFAR, 1_250_858),
        # trainable only: the whitening filters and the BatchNorm scales are frozen
        (C.FastNetModel(name="fastnet"), CIFAR, 1_971_352),
        (C.ToyModel(name="toy"), (1, 4, 4), 12),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_parameter_counts(opts, shape, expected):
    assert count_params(build_model(opts, shape, 10)) == expected


def test_registry_holds_every_config_model():
    names = {typing.get_args(opts.model_fields["name"].annotation)[0] for opts in typing.get_args(C.ModelConfig)[0].__args__}
    assert set(MODELS) == names


@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_output_shape_and_logits(name, shape):
    torch.manual_seed(0)
    model = build_model(DEFAULTS[name], shape, 10).eval()
    with torch.no_grad():
        out = model(torch.rand(4, *shape))
    assert out.shape == (4, 10)
    # logits, not log-probabilities: rows of exp(out) do not all sum to 1
    assert not torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-3)
    assert not isinstance(list(model.modules())[-1], (nn.LogSoftmax, nn.Softmax))


def test_num_classes_is_respected():
    assert build_model(DEFAULTS["cnn"], MNIST, 7)(torch.zeros(2, *MNIST)).shape == (2, 7)


def test_toy_outputs_a_probability():
    model = build_model(C.ToyModel(name="toy"), (1, 4, 4), 10)
    out = model(torch.randn(3, 1, 4, 4))
    assert out.shape == (3, 1) and ((out > 0) & (out < 1)).all()
    assert isinstance(model[-1], nn.Sigmoid)


def test_lenet5_classic_pads_mnist_only():
    assert isinstance(build_model(DEFAULTS["lenet5_classic"], MNIST, 10).features[0], nn.ZeroPad2d)
    assert isinstance(build_model(DEFAULTS["lenet5_classic"], CIFAR, 10).features[0], nn.Conv2d)


def test_cnn_pools_before_relu_with_the_studys_outputs_and_gradients():
    """The cnn model pools before its ReLUs (cheaper); as written, the study applies ReLU first."""
    torch.manual_seed(0)
    model = build_model(DEFAULTS["cnn"], MNIST, 10)
    torch.manual_seed(0)
    as_written = build_model(C.CNNModel(name="cnn", relu_first=True), MNIST, 10)
    assert [type(m) for m in model.features] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU] * 2
    assert [type(m) for m in as_written.features] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), as_written.state_dict().values()))
    x = torch.randn(16, *MNIST)
    grads = []
    for net in (model, as_written):
        net.zero_grad()
        out = net(x)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        if net is model:
            first = out.detach()
    assert torch.equal(first, as_written(x).detach())
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sum(g.abs().sum() for g in grads[0]) > 0


def test_keras_cnn_dropout_switch():
    def dropouts(opts):
        return sum(isinstance(m, nn.Dropout) for m in build_model(opts, CIFAR, 10).modules())

    assert dropouts(C.KerasCNNModel(name="keras_cnn")) == 3
    assert dropouts(C.KerasCNNModel(name="keras_cnn", dropout=False)) == 0


def _weight_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_lenet_xavier_init_is_applied():
    torch.manual_seed(0)
    xavier = _weight_layers(build_model(C.LeNetModel(name="lenet", init="xavier"), MNIST, 10))
    torch.manual_seed(0)
    default = _weight_layers(build_model(C.LeNetModel(name="lenet", init="default"), MNIST, 10))
    for x, d in zip(xavier, default):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(x.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert x.weight.abs().max() <= bound
        assert x.weight.abs().max() > 0.8 * bound  # it spans the xavier range
        assert not torch.equal(x.weight, d.weight)
        default_bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) bound
        assert d.weight.abs().max() <= default_bound
    # the Linear(400, 120) bounds tell the two inits apart clearly: 0.107 (xavier) vs 0.05 (default)
    assert xavier[2].weight.abs().max() > 0.1 > 0.05 >= default[2].weight.abs().max()


def test_keras_cnn_starts_like_keras():
    """Keras' defaults: glorot-uniform kernels (the conv fans include the 3x3 window) and zero biases."""
    torch.manual_seed(0)
    keras = _weight_layers(build_model(C.KerasCNNModel(name="keras_cnn"), CIFAR, 10))
    torch.manual_seed(0)
    default = _weight_layers(build_model(C.KerasCNNModel(name="keras_cnn", init="default"), CIFAR, 10))
    for k, d in zip(keras, default):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(k.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert 0.8 * bound < k.weight.abs().max() <= bound
        assert torch.count_nonzero(k.bias) == 0
        assert torch.count_nonzero(d.bias) == d.bias.numel()
    # Conv2d(3, 32, 3): glorot bound sqrt(6 / (27 + 288)) = 0.138 against PyTorch's 1 / sqrt(27) = 0.192
    assert keras[0].weight.abs().max() <= 0.139 < 0.18 < default[0].weight.abs().max()


def test_lenet_options_change_layer_types():
    def kinds(**kw):
        return {type(m) for m in build_model(C.LeNetModel(name="lenet", **kw), MNIST, 10).modules()}

    default = kinds()
    assert {nn.Sigmoid, nn.AvgPool2d} <= default and not {nn.ReLU, nn.MaxPool2d} & default
    modern = kinds(activation="relu", pooling="max")
    assert {nn.ReLU, nn.MaxPool2d} <= modern and not {nn.Sigmoid, nn.AvgPool2d} & modern
    assert nn.Tanh in kinds(activation="tanh")


def test_sizes_follow_the_input_shape():
    # a channel count and image size no model was written for
    for name in ("fc", "cnn", "lenet", "keras_cnn", "trashnet"):
        assert build_model(DEFAULTS[name], (2, 40, 36), 5)(torch.zeros(1, 2, 40, 36)).shape == (1, 5)


@pytest.mark.parametrize("name", ["trashnet", "fastnet"])  # fastnet's dry pass (flat_size) runs through BatchNorm
def test_building_leaves_batchnorm_statistics_alone(name):
    model = build_model(DEFAULTS[name], CIFAR, 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 0 for m in bns) and model.training


def test_user_errors_are_one_line():
    with pytest.raises(ConfigError, match="cannot take inputs of shape"):
        build_model(DEFAULTS["cnn"], (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="^model 'cnn' is too large for this machine's memory: .*can't allocate memory"):
        build_model(C.CNNModel(name="cnn", n_feature=2**20), MNIST, 10)  # 2.7e13 weights: not "cannot take inputs of shape"
    with pytest.raises(ConfigError, match="^model 'cnn' is too large: "):  # past torch's integers: not a traceback
        build_model(C.CNNModel(name="cnn", n_feature=10**20), MNIST, 10)

    class Unknown:
        name = "vgg"

    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_model(Unknown(), MNIST, 10)
