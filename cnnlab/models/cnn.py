"""Study A's small CNN: two conv-maxpool-ReLU stages (the study writes conv-ReLU-maxpool: the same
function) and two linear layers (6,422 params on MNIST)."""

from torch import nn

from cnnlab.models import features_classifier, flat_size, register


@register("cnn")
def build_cnn(opts, input_shape, num_classes):
    n = opts.n_feature
    # The study writes conv-ReLU-maxpool (relu_first). Max-pooling and ReLU commute (max(relu(a),
    # relu(b)) = relu(max(a, b))), so pooling first gives the same outputs and gradients while ReLU
    # and its backward touch 4x fewer values: about a tenth of a training step on the CPU.
    def stage(c_in: int) -> list[nn.Module]:
        act_pool = [nn.ReLU(), nn.MaxPool2d(2)] if opts.relu_first else [nn.MaxPool2d(2), nn.ReLU()]
        return [nn.Conv2d(c_in, n, 5), *act_pool]

    features = nn.Sequential(*stage(input_shape[0]), *stage(n))
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(flat_size(features, input_shape), 50), nn.ReLU(), nn.Linear(50, num_classes),
    )
    return features_classifier(features, classifier)
