"""The model summary: layer rows, output-size rules that match the real layers, totals."""

import re

import pytest
import torch
from torch import nn

from cnnlab import config as C
from cnnlab.models import build_model, count_params
from cnnlab.summary import LayerRow, conv_output_size, output_rule, summarize

CASES = [
    (C.FCModel(name="fc"), (1, 28, 28)),
    (C.CNNModel(name="cnn"), (1, 28, 28)),
    (C.CNNModel(name="cnn"), (3, 32, 32)),
    (C.LeNetModel(name="lenet", pooling="max"), (1, 28, 28)),
    (C.LeNetModel(name="lenet"), (3, 32, 32)),
    (C.LeNet5ClassicModel(name="lenet5_classic"), (1, 28, 28)),
    (C.LeNet5ClassicModel(name="lenet5_classic"), (3, 32, 32)),
    (C.TrashNetModel(name="trashnet"), (3, 32, 32)),
    (C.KerasCNNModel(name="keras_cnn"), (3, 32, 32)),
    (C.ToyModel(name="toy"), (1, 4, 4)),
]
RULE_KINDS = {"Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"}


@pytest.mark.parametrize(
    "args, expected",
    [
        ((28, 5), 24),
        ((24, 2, 2), 12),
        ((32, 3, 1, 1), 32),
        ((32, 3, 2, 1), 16),
        ((32, 1, 2), 16),
        ((7, 3, 2, 0), 3),
        ((28, 5, 1, 2), 28),
        ((10, 3, 1, 0, 2), 6),  # dilation 2: effective kernel 5
        ((5, 2, 2, 0, 1, True), 3),  # ceil_mode
        ((5, 3, 3, 1, 1, True), 2),  # ceil_mode's last window would start in the right padding: dropped
        ((6, 3, 3, 1, 1, True), 3),  # ... here it starts inside the input: kept
    ],
)
def test_conv_output_size(args, expected):
    assert conv_output_size(*args) == expected


def test_a_ceil_mode_rule_says_when_a_last_window_is_dropped():
    """PyTorch drops a ceil_mode pool's last window when it would start in the right padding: the
    rule gave ceil((5 + 2*1 - 3) / 3) + 1 = 3 for a 2x2 output."""
    pool = nn.MaxPool2d(3, 3, padding=1, ceil_mode=True)
    assert pool(torch.zeros(1, 1, 5, 5)).shape[-2:] == (2, 2)
    assert output_rule(pool, (5, 5)) == "5 -> ceil((5 + 2*1 - 3) / 3) + 1 - 1 = 2 (a last window would start in the padding)"
    assert output_rule(pool, (6, 6)) == "6 -> ceil((6 + 2*1 - 3) / 3) + 1 = 3"


def test_cnn_rows_on_mnist():
    rows, total = summarize(build_model(C.CNNModel(name="cnn"), (1, 28, 28), 10), (1, 28, 28))
    first = rows[0]
    assert isinstance(first, LayerRow)
    assert (first.name, first.kind, first.output_shape, first.params) == ("features.0", "Conv2d", (6, 24, 24), 156)
    assert first.rule == "28 -> floor((28 + 2*0 - 5) / 1) + 1 = 24"
    assert [r.kind for r in rows if r.rule] == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d"]
    assert rows[-1].output_shape == (10,) and rows[-1].rule == ""
    assert total == 6_422


@pytest.mark.parametrize("opts, shape", CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_rules_match_real_layers_and_totals(opts, shape):
    model = build_model(opts, shape, 10)
    rows, total = summarize(model, shape)
    assert total == count_params(model) == sum(r.params for r in rows)
    ruled = [r for r in rows if r.kind in RULE_KINDS]
    assert all(r.rule for r in ruled) and (ruled or opts.name == "fc")
    assert all(r.rule == "" for r in rows if r.kind not in RULE_KINDS)
    for r in ruled:
        # one number per rule, or "H: ... = h; W: ... = w"
        numbers = [int(n) for n in re.findall(r"= (\d+)", r.rule)]
        assert tuple(numbers) in {r.output_shape[1:], r.output_shape[1:2]}
        if len(numbers) == 1:
            assert r.output_shape[1] == r.output_shape[2]


def test_toy_summary_totals_12():
    rows, total = summarize(build_model(C.ToyModel(name="toy"), (1, 4, 4), 1), (1, 4, 4))
    assert [r.params for r in rows if r.params] == [10, 2] and total == 12
    assert [r.kind for r in rows] == ["Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear", "Sigmoid"]
    assert rows[-1].output_shape == (1,)


def test_summary_restores_modes_and_prints_nothing(capsys):
    model = build_model(C.KerasCNNModel(name="keras_cnn"), (3, 32, 32), 10)
    model.classifier.eval()  # a mixed state must come back as it was
    summarize(model, (3, 32, 32))
    assert model.training and model.features.training and not model.classifier.training
    assert capsys.readouterr() == ("", "")
    assert not any(m._forward_hooks for m in model.modules())


def test_rules_per_dim_and_1d():
    conv = nn.Conv2d(1, 1, (3, 5), stride=(1, 2), padding=(1, 0))
    assert output_rule(conv, (28, 20)) == (
        "H: 28 -> floor((28 + 2*1 - 3) / 1) + 1 = 28; W: 20 -> floor((20 + 2*0 - 5) / 2) + 1 = 8"
    )
    assert conv(torch.zeros(1, 1, 28, 20)).shape[2:] == (28, 8)
    # non-square input with square parameters shows both dims too
    assert output_rule(nn.MaxPool2d(2), (6, 4)).startswith("H: 6 -> ") and "W: 4 -> " in output_rule(nn.MaxPool2d(2), (6, 4))
    assert output_rule(nn.Conv1d(1, 1, 3, stride=2), (9,)) == "9 -> floor((9 + 2*0 - 3) / 2) + 1 = 4"
    assert output_rule(nn.AvgPool1d(2), (9,)) == "9 -> floor((9 + 2*0 - 2) / 2) + 1 = 4"
    assert output_rule(nn.Conv2d(1, 1, 3, dilation=2), (10, 10)) == "10 -> floor((10 + 2*0 - 2*(3-1) - 1) / 1) + 1 = 6"
    assert output_rule(nn.MaxPool2d(2, ceil_mode=True), (5, 5)) == "5 -> ceil((5 + 2*0 - 2) / 2) + 1 = 3"
    assert output_rule(nn.Conv2d(1, 1, 3, padding="same"), (7, 7)) == "7 -> 'same' padding, stride 1 = 7"
    assert output_rule(nn.Linear(3, 3), (7,)) == ""


def test_frozen_parameters_are_counted_and_marked(capsys, monkeypatch):
    """mnist_fast's fastnet keeps its whitening weights and BatchNorm scales fixed: its whitening Conv2d (8 filters
    of 1x2x2) showed 8 parameters, its bias alone, where torchinfo counts 40, and the total left the
    352 frozen ones out without saying so."""
    import sys

    from cnnlab.cli import main

    rows, trainable = summarize(build_model(C.FastNetModel(name="fastnet", widths=[32, 64, 64]), (1, 28, 28), 10), (1, 28, 28))
    assert (rows[0].name, rows[0].params, rows[0].frozen) == ("whiten", 40, 32)
    assert sum(r.params for r in rows) == 141_864 and sum(r.frozen for r in rows) == 352 and trainable == 141_512
    monkeypatch.setattr(sys, "argv", ["cnnlab", "summary", "configs/mnist_fast.yaml"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and re.search(r"│\s*whiten\s*│\s*Conv2d\s*│\s*8x27x27\s*│\s*40 \(32 frozen\)\s*│", out), out
    assert out.strip().splitlines()[-1] == "total parameters: 141,864 (141,512 trainable, 352 frozen)"
