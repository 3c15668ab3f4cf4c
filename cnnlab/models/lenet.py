"""Study C's LeNet (padded first conv, options for activation/pooling/init) and the classic LeNet-5."""

from torch import nn

from cnnlab.models import features_classifier, flat_size, register, xavier_init

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
POOLINGS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


@register("lenet")
def build_lenet(opts, input_shape, num_classes):
    act, pool = ACTIVATIONS[opts.activation], POOLINGS[opts.pooling]
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5, padding=2), act(), pool(2, 2),
        nn.Conv2d(6, 16, 5), act(), pool(2, 2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat_size(features, input_shape), 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )
    model = features_classifier(features, classifier)
    if opts.init == "xavier":  # weights only; biases keep PyTorch's default init
        xavier_init(model)
    return model


@register("lenet5_classic")
def build_lenet5_classic(opts, input_shape, num_classes):
    c, h, w = input_shape
    # MNIST -> the 32x32 input LeNet-5 expects; zeros are black on unnormalized pixels (lenet5_classic.yaml),
    # the mean's grey on normalized ones
    pad = [nn.ZeroPad2d(2)] if (h, w) == (28, 28) else []
    features = nn.Sequential(
        *pad,
        nn.Conv2d(c, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(flat_size(features, input_shape), 84), nn.Tanh(), nn.Linear(84, num_classes),
    )
    return features_classifier(features, classifier)
