"""The classic Keras cifar10_cnn example (study D's Keras aside): 1,250,858 params on CIFAR-10."""

from torch import nn

from cnnlab.models import features_classifier, flat_size, register, xavier_init


@register("keras_cnn")
def build_keras_cnn(opts, input_shape, num_classes):
    def dropout(p: float) -> list[nn.Module]:
        return [nn.Dropout(p)] if opts.dropout else []

    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 32, 3, padding=1), nn.ReLU(),  # padding 1 = Keras 'same' for 3x3
        nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2), *dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), *dropout(0.25),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(flat_size(features, input_shape), 512), nn.ReLU(), *dropout(0.5),
        nn.Linear(512, num_classes),
    )
    model = features_classifier(features, classifier)
    if opts.init == "keras":  # Keras layers start from glorot-uniform kernels and zero biases
        xavier_init(model, zero_bias=True)
    return model
