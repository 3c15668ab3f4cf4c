"""The fast CIFAR-10 config's pieces: fastnet's whitening and frozen parameters, the SGD bias rate,
test-time augmentation, and that a run sets the whitening from its own training images."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab import config as C
from cnnlab.config import config_from_dict, load_config
from cnnlab.errors import ConfigError
from cnnlab.engine import evaluate, predict
from cnnlab.experiment import build_optimizer, resolve_device, setup
from cnnlab.models import build_model
from conftest import ROOT

CIFAR = (3, 32, 32)


def fastnet(widths=(8, 16, 16)):
    torch.manual_seed(0)
    return build_model(C.FastNetModel(name="fastnet", widths=list(widths)), CIFAR, 10)


def whitened(model, images):
    """The whitening conv's outputs without its bias, as rows of channel values (one per position)."""
    out = F.conv2d(images, model.whiten.weight)
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])


def correlated_images(n=64):
    """Images whose neighbouring pixels and channels are strongly correlated, like real ones."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(n, 1, 8, 8, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return base.repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, 32, 32, generator=g)


def test_whitening_decorrelates_the_patches_it_was_set_from():
    model, images = fastnet(), correlated_images()
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert (raw.T @ raw / len(raw) - torch.eye(12)).abs().max() > 0.5  # far from white before
    model.init_from_data(images)
    rows = whitened(model, images)
    first, second = rows[:, :12], rows[:, 12:]
    assert torch.allclose(first.T @ first / len(first), torch.eye(12), atol=2e-2)
    assert torch.equal(second, -first)  # the negated copies, so GELU keeps both signs
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad


def test_frozen_parameters_do_not_move_when_training():
    model = fastnet()
    model.init_from_data(correlated_images())
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    head_before = model.head.weight.clone()
    assert "whiten.weight" in frozen and any(n.endswith(".weight") and "body" in n for n in frozen)  # BN scales
    opt = build_optimizer(config_from_dict({"name": "t", "model": {"name": "fastnet"}, "dataset": {"name": "cifar10"},
                                            "optimizer": {"name": "sgd", "lr": 0.5, "weight_decay": 0.1}}),
                          model)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(16, *CIFAR)), torch.randint(0, 10, (16,))).backward()
        opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[name], before) for name, before in frozen.items())
    assert not torch.equal(params["head.weight"], head_before)  # while the rest trained


def test_convolutions_start_as_the_identity_on_their_first_channels():
    model = fastnet()
    conv = model.body[1][0]  # 24 -> 8 channels: the first 8 filters pass their own channel through
    x = torch.randn(2, 24, 6, 6)
    assert torch.allclose(conv(x), x[:, :8], atol=1e-6)


def test_sgd_bn_lr_scale_gives_batchnorm_parameters_their_own_rate():
    model = fastnet()
    base = {"name": "t", "model": {"name": "fastnet"}, "dataset": {"name": "cifar10"}}
    cfg = config_from_dict({**base, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01, "bn_lr_scale": 64}})
    weights, norms = build_optimizer(cfg, model).param_groups
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for p in norms["params"]} == {id(p) for m in bn for p in m.parameters()}
    assert any(p is model.whiten.bias for p in weights["params"])  # a bias, but not BatchNorm's
    assert len(weights["params"]) + len(norms["params"]) == len(list(model.parameters()))
    assert (weights["lr"], weights["weight_decay"]) == (0.1, 0.01)
    assert norms["lr"] == pytest.approx(6.4) and norms["weight_decay"] == pytest.approx(0.01 / 64)
    plain = config_from_dict({**base, "optimizer": {"name": "sgd", "lr": 0.1}})
    assert len(build_optimizer(plain, model).param_groups) == 1


def test_tta_averages_the_mirrored_and_moved_images():
    model = fastnet().eval()
    x = torch.randn(5, *CIFAR)
    with torch.no_grad():
        mirrored = lambda v: (model(v) + model(v.flip(3))) / 2  # noqa: E731
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[:, :, :32, :32], padded[:, :, 2:, 2:]
        assert torch.equal(up_left[:, :, 1:, 1:], x[:, :, :31, :31])  # moved one pixel right and down...
        assert torch.equal(down_right[:, :, :31, :31], x[:, :, 1:, 1:])  # ...and one pixel left and up
        assert torch.equal(predict(model, x), model(x))
        assert torch.allclose(predict(model, x, "flip"), mirrored(x), atol=1e-6)
        expected = mirrored(x) / 2 + (mirrored(up_left) + mirrored(down_right)) / 4
        assert torch.allclose(predict(model, x, "flip_translate"), expected, atol=1e-6)


def test_evaluate_scores_the_tta_outputs():
    model = fastnet().eval()
    x, y = torch.randn(40, *CIFAR), torch.randint(0, 10, (40,))
    with torch.no_grad():
        out = predict(model, x, "flip")
    loss, acc = evaluate(model, x, y, 16, lambda o, t: F.cross_entropy(o, t), tta="flip")
    assert loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert acc == (out.argmax(1) == y).sum().item() / 40
    assert evaluate(model, x, y, 16, lambda o, t: F.cross_entropy(o, t))[0] != pytest.approx(loss, rel=1e-5)


def test_a_run_sets_the_whitening_from_its_training_images(tiny_data):
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml", ["model.widths=[8,8,8]", "device=cpu"])
    data, _, state, _ = setup(cfg, resolve_device("cpu"), tiny_data)
    rows = whitened(state.model, data.x_train)[:, :12]
    assert torch.allclose(rows.T @ rows / len(rows), torch.eye(12), atol=5e-2)


def test_fast_config_is_airbench_translated_to_a_mean_loss():
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml")
    kilostep = 1024 * (1 + 1 / (1 - 0.85))  # airbench's rates are per summed loss over 1024 images
    assert cfg.optimizer.lr == pytest.approx(11.5 / kilostep * cfg.train.batch_size)
    assert cfg.optimizer.lr * cfg.optimizer.weight_decay == pytest.approx(0.0153 * 1024 / kilostep, rel=1e-3)
    assert (cfg.train.batch_size, cfg.optimizer.bn_lr_scale, cfg.loss.label_smoothing) == (1024, 64, 0.2)


def test_more_groups_than_the_image_can_pool_is_one_config_error():
    with pytest.raises(ConfigError, match="cannot take inputs of shape"):
        build_model(C.FastNetModel(name="fastnet", widths=[8] * 5), CIFAR, 10)
    assert torch.equal(fastnet().whiten.bias, torch.zeros(24))  # as airbench starts it


def _first_step_gradient(cfg):
    from cnnlab.engine import take

    data, pipeline, state, loss_fn = setup(cfg, resolve_device("cpu"))
    idx = torch.arange(cfg.train.batch_size)
    x, y = pipeline.train_batch(take(data.x_train, idx), data.y_train.index_select(0, idx), state.aug_gen)
    loss_fn(state.model(x), y).backward()
    return state.model.body[1][0].weight.grad.norm().item()  # the first 3x3 convolution


def test_mnist_fast_batchnorm_epsilon_keeps_the_first_gradients_tame():
    """MNIST's blank borders leave a channel or two almost constant deep in the net; with airbench's
    BatchNorm epsilon of 1e-12 those get divided by almost nothing and the first gradients are
    thousands of times CIFAR's (under bf16 autocast the run then diverged on a GPU or stayed at
    chance on the CPU). mnist_fast's epsilon bounds that."""
    from conftest import real_data

    data = real_data("MNIST", "raw")
    overrides = ["device=cpu", f"dataset.data_dir={data}", "dataset.train_subset=2048", "dataset.test_subset=100"]
    cfg = load_config(ROOT / "configs" / "mnist_fast.yaml", overrides)
    assert cfg.model.bn_eps == 1e-3
    assert all(m.eps == 1e-3 for m in build_model(cfg.model, (1, 28, 28), 10).modules() if isinstance(m, torch.nn.BatchNorm2d))
    tame = _first_step_gradient(cfg)
    wild = _first_step_gradient(load_config(ROOT / "configs" / "mnist_fast.yaml", [*overrides, "model.bn_eps=1e-12"]))
    assert tame < 200 and wild > 20 * tame, (tame, wild)


def test_whitening_is_set_from_permuted_images_when_the_permutation_waits_for_the_augmentation():
    """With transform.permute and flips/crops, the stored training images are unpermuted and each
    batch is permuted after its augmentation: the whitening must see what the model sees. (Real
    images: the pixels of random ones are as correlated permuted as not.)"""
    from conftest import real_data

    data_dir = real_data("cifar-10-batches-py")
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml", ["model.widths=[8,8,8]", "device=cpu", "transform.permute=true",
                                                               "train.tta=none", "dataset.train_subset=2000", "dataset.test_subset=100"])
    data, pipeline, state, _ = setup(cfg, resolve_device("cpu"), data_dir)
    assert pipeline.defer_permutation
    seen = pipeline.as_trained(data.x_train)
    assert not torch.equal(seen, data.x_train)
    rows = whitened(state.model, seen)[:, :12]
    assert torch.allclose(rows.T @ rows / len(rows), torch.eye(12), atol=5e-2)
