"""Study A's small CNN: two conv-ReLU-maxpool stages and two linear layers (6,422 params on MNIST)."""

from torch import nn

from cnnlab.models import features_classifier, flat_size, register


@register("cnn")
def build_cnn(opts, input_shape, num_classes):
    n = opts.n_feature
    # The study writes conv-ReLU-maxpool. Max-pooling and ReLU commute (max(relu(a), relu(b)) =
    # relu(max(a, b))), so pooling first gives the same outputs and gradients while ReLU and its
    # backward touch 4x fewer values: about a tenth of a training step on the CPU.
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], n, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(n, n, 5), nn.MaxPool2d(2), nn.ReLU(),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(flat_size(features, input_shape), 50), nn.ReLU(), nn.Linear(50, num_classes),
    )
    return features_classifier(features, classifier)
