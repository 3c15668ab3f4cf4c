"""forward-check: the NumPy recomputation matches PyTorch on every covered model, names the layer that
differs when a weight changes after the PyTorch pass, and refuses what it does not cover."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import config as C
from cnnlab import forward_check as fc
from cnnlab.cli import main
from cnnlab.commands.teaching import SHOWN_PREDICTIONS, prediction_lines
from cnnlab.config import load_config
from cnnlab.experiment import run
from cnnlab.models import build_model
from conftest import ROOT
from fakedata import make_cifar, make_idx_dataset

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
COVERED_MODELS = [
    (C.FCModel(name="fc"), MNIST),
    (C.CNNModel(name="cnn"), MNIST),
    (C.LeNetModel(name="lenet"), MNIST),
    (C.LeNetModel(name="lenet", activation="relu", pooling="max", init="default"), CIFAR),
    (C.LeNetModel(name="lenet", activation="tanh"), MNIST),
    (C.LeNet5ClassicModel(name="lenet5_classic"), MNIST),
    (C.LeNet5ClassicModel(name="lenet5_classic"), CIFAR),
    (C.KerasCNNModel(name="keras_cnn"), CIFAR),
    (C.ToyModel(name="toy"), (1, 4, 4)),
]


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_idx_dataset(root, "MNIST", n_train=20, n_test=10)
    return root


@pytest.mark.parametrize("opts, shape", COVERED_MODELS, ids=lambda v: getattr(v, "name", str(v)))
def test_numpy_matches_pytorch_on_every_covered_model(opts, shape):
    torch.manual_seed(0)
    model = build_model(opts, shape, 10)
    x = torch.randn(4, *shape)
    rows, out_torch, out_numpy = fc.check(model, x)
    assert len(rows) == len(fc.layers(model)) and all(r.ok for r in rows), rows
    assert fc.first_failure(rows) is None
    with torch.no_grad():
        expected = model.eval()(x)
    assert np.allclose(out_numpy, expected.double().numpy(), atol=1e-5)
    assert rows[-1].output_shape == tuple(expected.shape[1:])


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv_and_pool_options_by_hand():
    """Stride, padding ('same' included), asymmetric zero padding and padded pools."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.ZeroPad2d((1, 2, 0, 3)),
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(3, 4, (2, 4), padding="same", bias=False),
        nn.AvgPool2d(2, stride=1, padding=1),
        nn.Sigmoid(),
        nn.Dropout(0.5),  # identity: the check runs in eval mode
        nn.Flatten(),
        nn.Linear(4 * 5 * 4, 3),
    )
    rows, out_torch, _ = fc.check(model, torch.randn(5, 2, 11, 9))
    assert all(r.ok for r in rows), rows
    assert [r.output_shape for r in rows][:2] == [(2, 14, 12), (3, 7, 6)]


def test_a_weight_changed_after_the_pytorch_pass_names_its_layer():
    torch.manual_seed(0)
    model = build_model(C.CNNModel(name="cnn"), MNIST, 10)
    x = torch.randn(3, *MNIST)
    outs = fc.torch_outputs(model, x)
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] += 0.5
    rows = fc.compare(model, outs, fc.numpy_outputs(model, x))
    bad = fc.first_failure(rows)
    assert (bad.name, bad.kind) == ("features.3", "Conv2d") and bad.max_abs_diff > fc.TOLERANCE
    assert all(r.ok for r in rows[:3])


def test_a_layer_with_large_outputs_is_judged_by_float32s_precision_at_that_size():
    """Inputs normalized with std 1e-4 make a Linear's outputs reach thousands, where float32's
    rounding alone is above 1e-4: a correct model failed with exit 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(4, 1, 28, 28) * 1e4
    rows, out_torch, out_numpy = fc.check(model, x)
    assert rows[1].largest > 1000 and rows[1].max_abs_diff > fc.TOLERANCE  # more than the absolute 1e-4
    assert rows[1].ok and rows[1].tolerance == pytest.approx(fc.TOLERANCE * rows[1].largest)
    outs = fc.torch_outputs(model, x)
    with torch.no_grad():
        model[1].bias[0] += 2 * rows[1].tolerance  # a real difference at that size still fails
    assert not fc.compare(model, outs, fc.numpy_outputs(model, x))[1].ok


def test_a_large_batch_is_checked_in_chunks_with_the_same_result(monkeypatch):
    """Every layer's outputs were kept for the whole batch, twice: --n 1000 of keras_cnn took 3 GB."""
    torch.manual_seed(0)
    model = build_model(C.CNNModel(name="cnn"), MNIST, 10)
    x = torch.randn(7, *MNIST)
    x[5] *= 50  # the largest outputs come from one image of the middle chunk
    whole, t_whole, n_whole = fc.check(model, x)
    monkeypatch.setattr(fc, "CHUNK", 3)
    calls = []
    original = fc.torch_outputs
    monkeypatch.setattr(fc, "torch_outputs", lambda m, part: calls.append(len(part)) or original(m, part))
    chunked, t_chunked, n_chunked = fc.check(model, x)
    assert calls == [3, 3, 1]
    assert [r.name for r in chunked] == [r.name for r in whole]
    assert [r.largest for r in chunked] == pytest.approx([r.largest for r in whole], rel=1e-6)
    assert all(r.ok for r in chunked) and all(r.ok for r in whole)
    assert torch.allclose(t_chunked, t_whole, atol=1e-5) and np.allclose(n_chunked, n_whole) and t_chunked.shape == (7, 10)
    # each layer's difference is the largest over the chunks: one planted in the middle chunk is
    # the one reported. Not the unplanted differences compared digit for digit: they are float32's
    # rounding, which the batch's size changes on some CPUs (a 16-core Xeon's 2e-6 of 8e-6)
    real = fc.numpy_outputs
    planted = 1.0
    monkeypatch.setattr(fc, "numpy_outputs", lambda m, part: [o + planted * (len(calls) == 5) for o in real(m, part)])
    rows, _, _ = fc.check(model, x)
    assert calls[3:] == [3, 3, 1]
    assert [r.max_abs_diff for r in rows] == pytest.approx([planted] * len(rows), rel=1e-2) and not any(r.ok for r in rows)
    # a difference of NaN in a later chunk fails the layer, as it does in one batch (max(0.0, nan) is 0.0)
    monkeypatch.setattr(fc, "numpy_outputs", lambda m, part: [np.full_like(o, np.nan) if len(part) == 1 else o for o in real(m, part)])
    rows, _, _ = fc.check(model, x)
    assert all(np.isnan(r.max_abs_diff) and not r.ok for r in rows)


def test_the_pytorch_pass_keeps_each_layers_mode():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    model[1].eval()
    rows, _, _ = fc.check(model, torch.randn(2, 3))
    assert all(r.ok for r in rows) and model.training and not model[1].training and not model[1][0].training


def test_uncovered_layers_are_named():
    model = build_model(C.TrashNetModel(name="trashnet"), CIFAR, 10)
    with pytest.raises(fc.NotCovered) as e:
        fc.check(model, torch.randn(2, *CIFAR))
    message = str(e.value)
    assert "features.1 (BatchNorm2d)" in message and "features.4 (Residual)" in message
    assert "AdaptiveAvgPool2d" in message and "Conv2d" in message.split("it covers")[1]
    with pytest.raises(fc.NotCovered, match="dilation"):
        fc.layers(nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2)))


def test_a_forward_that_does_not_run_the_layers_in_order_is_refused():
    class Backwards(nn.Sequential):
        def forward(self, x):
            return self[0](self[1](x))

    with pytest.raises(fc.NotCovered, match="in order"):
        fc.check(Backwards(nn.Linear(3, 3), nn.ReLU()), torch.randn(2, 3))


@pytest.mark.filterwarnings("error")  # a NumPy warning would print on the user's stderr
def test_weights_that_are_not_finite_are_checked_not_refused():
    """A run whose last update left NaN or infinite weights (the loss check sees only the losses before
    it): both passes give NaN in the same places, which agree. forward-check said it covers only
    models whose forward runs their layers in order (exit 2), as NaN != NaN; NumPy's overflow in a
    sigmoid printed a RuntimeWarning."""
    torch.manual_seed(0)
    model = build_model(C.CNNModel(name="cnn"), MNIST, 10)
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] = float("inf")
        model.classifier[1].weight[0, 0] = float("nan")
    rows, out_torch, out_numpy = fc.check(model, torch.randn(3, *MNIST))
    assert all(r.ok for r in rows), rows
    assert torch.isnan(out_torch).all() and np.isnan(out_numpy).all()
    lenet = build_model(C.LeNetModel(name="lenet"), MNIST, 10)
    with torch.no_grad():  # the first filter gives -750 everywhere: its sigmoid's exp overflows in NumPy (0, as in PyTorch)
        lenet.features[0].weight[0].zero_()[0, 2, 2] = -750.0
        lenet.features[0].bias[0] = 0.0
    assert all(r.ok for r in fc.check(lenet, torch.ones(3, *MNIST))[0])
    one = nn.Sequential(nn.Linear(1, 3))
    nan, inf = float("nan"), float("inf")
    rows = fc.compare(one, [torch.tensor([[nan, inf, -inf]])], [np.array([[nan, inf, inf]])])
    assert not rows[0].ok  # -inf against inf differs
    rows = fc.compare(one, [torch.tensor([[nan, inf, 1.0]])], [np.array([[1.0, inf, 1.0]])])
    assert not rows[0].ok  # NaN against a number differs


# ---------------------------------------------------------------------------- the command
def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `cnnlab ARGS` in this process (no torch import per call): (exit code, stdout, stderr)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["cnnlab", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_passes_on_a_fresh_model(tiny_mnist, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/lenet5_classic.yaml", "--n", "3", "--data-dir", tiny_mnist)
    assert code == 0, err
    assert "ZeroPad2d" in out and "classifier.3" in out
    assert out.strip().splitlines()[-1].startswith("all 13 layers match PyTorch within 0.0001")


def test_cli_checks_the_configs_test_subset(tiny_mnist, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "dataset.test_subset=3", "--data-dir", tiny_mnist)
    assert code == 0 and err == ""  # fewer than the default 8 because of the config: nothing to say
    assert "fc on 3 mnist test images" in out and "predicted classes, NumPy:   [" in out
    assert len(out.split("predicted classes, NumPy:   [")[1].split("]")[0].split(",")) == 3


def test_cli_says_when_n_is_more_than_the_split_holds(tiny_mnist, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "--n", 20, "--data-dir", tiny_mnist)
    assert code == 0 and "fc on 10 mnist test images" in out
    assert err.strip() == "note: --n 20 is more than the 10 mnist test images; checking all 10"
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "--n", 5, "dataset.test_subset=4", "--data-dir", tiny_mnist)
    assert code == 0 and "fc on 4 mnist test images" in out
    assert err.strip() == "note: --n 5 is more than the 4 mnist test images (dataset.test_subset=4); checking all 4"


def test_cli_sums_up_the_predictions_of_a_large_batch(tmp_path, monkeypatch, capsys):
    """Up to SHOWN_PREDICTIONS images the lists are whole; past that, their start, the count and whether
    NumPy and PyTorch agree (--n 20000 printed 10,000 classes on one line each)."""
    make_idx_dataset(tmp_path, "MNIST", n_train=4, n_test=SHOWN_PREDICTIONS + 5)
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "--n", 1000, "--data-dir", tmp_path)
    assert code == 0, err
    lines = [line for line in out.splitlines() if "predict" in line]
    assert len(lines) == 3 and all(len(line) < 120 for line in lines), lines
    assert lines[0].startswith("predicted classes, NumPy:   [") and lines[0].endswith(", ...] (25 in all)")
    assert len(lines[0].split("[")[1].split(", ...]")[0].split(",")) == SHOWN_PREDICTIONS
    assert lines[1].startswith("predicted classes, PyTorch: [") and lines[1].endswith(", ...] (25 in all)")
    assert lines[2] == "NumPy and PyTorch predict the same class for all 25 images"
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "--n", SHOWN_PREDICTIONS, "--data-dir", tmp_path)
    lines = [line for line in out.splitlines() if "predict" in line]
    assert code == 0 and len(lines) == 2 and lines[0].endswith("]"), lines  # a batch this small is shown whole


def test_a_large_batch_where_numpy_and_pytorch_disagree_says_on_how_many_and_the_first():
    numpy_classes = [1] * 30
    torch_classes = [1] * 22 + [2] + [1] * 5 + [2, 2]
    assert prediction_lines(numpy_classes, torch_classes)[2] == (
        "NumPy and PyTorch predict different classes for 3 of the 30 images (the first: image 22)"
    )


def test_cli_refuses_a_test_subset_larger_than_the_split(tiny_mnist, monkeypatch, capsys):
    """--n more than the split holds is a note (a smaller batch still checks every layer), but the
    config's dataset.test_subset is refused as `cnnlab train` refuses it."""
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_fc.yaml", "dataset.test_subset=11", "--data-dir", tiny_mnist)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: dataset.test_subset=11 is more than the 10 images of the mnist test split; ask for 10 or fewer, or leave it out to use them all"]


def test_cli_checks_a_run_an_earlier_cnnlab_trained_with_a_subset_larger_than_the_split(tiny_mnist, tmp_path, monkeypatch, capsys):
    """Its stored config is not refused (an earlier cnnlab cut the subset to the split): its weights are checked."""
    trained = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.max_steps=2"]), runs_dir=tmp_path, data_dir=tiny_mnist)
    stored = (trained.path / "config.yaml").read_text()
    (trained.path / "config.yaml").write_text(stored.replace("test_subset: null", "test_subset: 2000"))
    code, out, err = cli(monkeypatch, capsys, "forward-check", "--run", trained.path, "--data-dir", tiny_mnist)
    assert code == 0, err
    assert "layers match PyTorch" in out


def test_cli_fails_naming_the_layer_when_a_weight_changes(tiny_mnist, monkeypatch, capsys):
    original = fc.torch_outputs

    def then_perturb(model, x):
        outs = original(model, x)
        with torch.no_grad():
            model.classifier[1].weight.mul_(1.01)
        return outs

    monkeypatch.setattr(fc, "torch_outputs", then_perturb)
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_cnn.yaml", "--data-dir", tiny_mnist)
    assert code == 1 and "NO" in out
    assert "layer classifier.1 (Linear)" in err and "> 0.0001" in err and len(err.strip().splitlines()) == 1


def test_cli_says_what_it_does_not_cover(tmp_path, monkeypatch, capsys):
    make_cifar(tmp_path, n=2)
    code, _, err = cli(monkeypatch, capsys, "forward-check", "configs/cifar10_trashnet.yaml", "--data-dir", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1  # 1 is for a layer that differs
    assert "does not cover" in err and "BatchNorm2d" in err


def test_cli_usage_errors(monkeypatch, capsys):
    assert cli(monkeypatch, capsys, "forward-check")[0] == 2
    code, _, err = cli(monkeypatch, capsys, "forward-check", "configs/mnist_cnn.yaml", "--run", "/nonexistent/run")
    assert code == 1 and "not a run directory" in err


def test_cli_checks_a_run_on_the_data_it_trained_on_from_any_folder(tiny_mnist, tmp_path, monkeypatch, capsys):
    """--run read --data-dir, else $CNNLAB_DATA_DIR, else ./data (and tried to download MNIST there),
    where train --resume reads the folder the run trained on while it exists."""
    trained = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.max_steps=1"]), runs_dir=tmp_path, data_dir=tiny_mnist)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    code, out, err = cli(monkeypatch, capsys, "forward-check", "--run", trained.path)
    assert code == 0 and "layers match PyTorch" in out, err
    assert not (elsewhere / "data").exists()
    code, out, err = cli(monkeypatch, capsys, "forward-check", "--run", trained.path, "--data-dir", elsewhere)
    assert code == 1 and f"MNIST not found in {elsewhere}" in err  # a --data-dir given still wins


def test_cli_names_how_config_and_run_differ(tiny_mnist, tmp_path, monkeypatch, capsys):
    """CONFIG must name the model the run trained: lenet_modern.yaml against a lenet.yaml run said
    'names lenet on mnist, but RUN trained lenet on mnist', and an override given for the run
    (model.activation=relu) was counted against CONFIG, with the same line."""
    trained = run(load_config(ROOT / "configs/lenet.yaml", ["device=cpu", "train.max_steps=1"]), runs_dir=tmp_path, data_dir=tiny_mnist)
    code, _, err = cli(monkeypatch, capsys, "forward-check", "configs/lenet_modern.yaml", "--run", trained.path, "--data-dir", tiny_mnist)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "names lenet (activation relu, pooling max" in err and "trained lenet (activation sigmoid, pooling avg" in err, err
    code, out, err = cli(monkeypatch, capsys, "forward-check", "configs/lenet.yaml", "--run", trained.path, "model.activation=relu", "--data-dir", tiny_mnist)
    assert code == 0, err  # as without CONFIG: the override changes the checked model, not the run's
    assert "layers match PyTorch" in out


def test_cli_refuses_weights_that_do_not_fit_or_load(tiny_mnist, tmp_path, monkeypatch, capsys):
    trained = run(load_config(ROOT / "configs/mnist_cnn.yaml", ["device=cpu", "train.max_steps=2"]), runs_dir=tmp_path, data_dir=tiny_mnist)
    code, _, err = cli(monkeypatch, capsys, "forward-check", "--run", trained.path, "model.n_feature=8", "--data-dir", tiny_mnist)
    assert code == 1 and "does not fit this config's model: size mismatch" in err and len(err.strip().splitlines()) == 1
    weights = trained.path / "model.pt"
    weights.write_bytes(weights.read_bytes()[:500])  # a truncated copy
    code, _, err = cli(monkeypatch, capsys, "forward-check", "--run", trained.path, "--data-dir", tiny_mnist)
    assert code == 1 and "cannot read" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
