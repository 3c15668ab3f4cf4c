"""The training loop's pieces on hand-made tensors: evaluate() in eval mode, the shuffled data order,
and the loss function."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torch.utils._python_dispatch

from cnnlab import engine
from cnnlab.config import AugmentConfig, KerasCNNModel, LeNetModel, TrainConfig, TrashNetModel, TransformConfig
from cnnlab.engine import CHECK_EVERY, Data, NonFiniteLoss, State, check_finite, evaluate, loss_function, train_epoch
from cnnlab.models import build_model
from cnnlab.transforms import Pipeline


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: a second thread only waits (and on a busy machine, a lot)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("opts", [TrashNetModel(name="trashnet"), KerasCNNModel(name="keras_cnn")], ids=["batchnorm", "dropout"])
def test_evaluate_runs_in_eval_mode_and_restores_the_training_flag(opts):
    torch.manual_seed(0)
    model = build_model(opts, (3, 32, 32), 10)
    x, y = torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))
    loss_fn = loss_function("cross_entropy", 0.0)
    with torch.no_grad():  # move BatchNorm's running statistics away from their initial 0 and 1
        model(x + 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.train()
    first = evaluate(model, x, y, 7, loss_fn)
    assert model.training
    assert evaluate(model, x, y, 7, loss_fn) == first  # no dropout mask
    assert evaluate(model, x, y, 1000, loss_fn) == pytest.approx(first, rel=1e-5)  # no batch statistics
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert evaluate(model, x, y, 7, loss_fn) == pytest.approx((F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()), rel=1e-5)
    assert not model.training


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluate_without_eval_mode_normalizes_each_batch_by_its_own_statistics(was_training):
    """train.eval_mode=false: a test loop that never calls model.eval() (study D's article), where
    BatchNorm uses each test batch's mean and variance rather than the running ones."""
    torch.manual_seed(0)
    model = build_model(TrashNetModel(name="trashnet"), (3, 32, 32), 10)
    x, y = torch.randn(20, 3, 32, 32) * 3 + 2, torch.randint(0, 10, (20,))  # far from the running 0 and 1
    loss_fn = loss_function("cross_entropy", 0.0)
    with torch.no_grad():
        expected = torch.cat([model.train()(x[i : i + 7]) for i in range(0, 20, 7)])  # batches of 7: 7, 7, 6
        in_eval_mode = model.eval()(x)
    assert not torch.allclose(expected, in_eval_mode, atol=1e-3)  # the two modes differ on these images

    model.train(was_training)
    loss, acc = evaluate(model, x, y, 7, loss_fn, eval_mode=False)
    assert (loss, acc) == pytest.approx((F.cross_entropy(expected, y).item(), (expected.argmax(1) == y).float().mean().item()), rel=1e-5)
    assert model.training == was_training
    assert evaluate(model, x, y, 20, loss_fn, eval_mode=False)[0] != pytest.approx(loss, rel=1e-5)  # batch size matters


def test_fit_evaluates_as_train_eval_mode_says():
    torch.manual_seed(0)
    model = build_model(TrashNetModel(name="trashnet"), (3, 32, 32), 10)
    data = Data(torch.randn(30, 3, 32, 32), torch.randint(0, 10, (30,)), torch.randn(20, 3, 32, 32) * 3 + 2, torch.randint(0, 10, (20,)))
    state = State(model, torch.optim.SGD(model.parameters(), lr=0.01), None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    pipeline = Pipeline(TransformConfig(), [0.0] * 3, [1.0] * 3, (3, 32, 32), 0, 10)
    loss_fn = loss_function("cross_entropy", 0.0)
    rows = []
    engine.fit(state, data, pipeline, TrainConfig(batch_size=10, eval_batch_size=7, eval_mode=False), loss_fn, on_epoch=lambda row, _: rows.append(row))
    batch_stats = evaluate(model, data.x_test, data.y_test, 7, loss_fn, eval_mode=False)
    assert (rows[-1]["test_loss"], rows[-1]["test_acc"]) == pytest.approx(batch_stats, rel=1e-5)
    assert evaluate(model, data.x_test, data.y_test, 7, loss_fn)[0] != pytest.approx(batch_stats[0], rel=1e-3)


# ---------------------------------------------------------------------------- data order
def epoch_orders(monkeypatch, seed: int, n: int = 50, epochs: int = 2) -> list[list[int]]:
    """The training indices each epoch takes, step after step, for a data-order generator seeded with seed."""
    taken: list[torch.Tensor] = []
    real_take = engine.take
    monkeypatch.setattr(engine, "take", lambda x, idx: taken.append(idx.clone()) or real_take(x, idx))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = State(model, torch.optim.SGD(model.parameters(), lr=0.1), None, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(1))
    data = Data(torch.randn(n, 1, 2, 2), torch.randint(0, 3, (n,)), torch.randn(5, 1, 2, 2), torch.randint(0, 3, (5,)))
    pipeline = Pipeline(TransformConfig(), [0.0], [1.0], (1, 2, 2), 0, 3)
    orders = []
    for _ in range(epochs):
        taken.clear()
        train_epoch(state, data, pipeline, TrainConfig(batch_size=8), loss_function("cross_entropy", 0.0))
        assert [len(i) for i in taken] == [8] * 6 + [2]
        orders.append(torch.cat(taken).tolist())
    return orders


def test_every_epoch_takes_a_fresh_seeded_permutation_of_the_training_split(monkeypatch):
    first, second = epoch_orders(monkeypatch, seed=0)
    assert sorted(first) == sorted(second) == list(range(50))  # every image once per epoch
    assert first != list(range(50)) and first != second  # shuffled, and differently each epoch
    assert epoch_orders(monkeypatch, seed=0) == [first, second]  # the generator decides the order
    assert epoch_orders(monkeypatch, seed=1)[0] != first


# ---------------------------------------------------------------------------- loss
def test_label_smoothing_mixes_cross_entropy_with_the_uniform_target():
    logits, y = torch.randn(16, 10, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
    log_p = logits.log_softmax(1)
    nll = -log_p[torch.arange(16), y].mean()
    uniform = -log_p.mean(1).mean()
    assert loss_function("cross_entropy", 0.1)(logits, y).item() == pytest.approx((0.9 * nll + 0.1 * uniform).item(), rel=1e-6)
    assert loss_function("cross_entropy", 0.0)(logits, y).item() == pytest.approx(nll.item(), rel=1e-6)


# ---------------------------------------------------------------------------- epoch metrics
def test_the_epoch_train_loss_is_per_image_like_the_accuracy():
    """65 images in batches of 64: the last batch of one image weighs 1/65 of the loss, not 1/2."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = State(model, torch.optim.SGD(model.parameters(), lr=1e-30), None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    x, y = torch.randn(65, 1, 2, 2), torch.randint(0, 3, (65,))
    data = Data(x, y, x[:5], y[:5])
    pipeline = Pipeline(TransformConfig(), [0.0], [1.0], (1, 2, 2), 0, 3)
    loss_fn = loss_function("cross_entropy", 0.0)
    row = train_epoch(state, data, pipeline, TrainConfig(batch_size=64), loss_fn)  # lr 1e-30: the weights stay put
    with torch.no_grad():
        out = model(x)
    assert row["train_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert row["train_acc"] == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_the_train_accuracy_under_mixup_counts_each_images_dominant_class():
    """Mixup's targets are soft: an output is right when it picks the class with the larger share."""
    seen = []

    def loss_fn(out, y):
        seen.append((out.detach(), y))
        return F.cross_entropy(out, y)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = State(model, torch.optim.SGD(model.parameters(), lr=0.1), None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    x, y = torch.randn(64, 1, 2, 2), torch.randint(0, 3, (64,))
    pipeline = Pipeline(TransformConfig(augment=AugmentConfig(mixup=0.4)), [0.0], [1.0], (1, 2, 2), 0, 3)
    row = train_epoch(state, Data(x, y, x, y), pipeline, TrainConfig(batch_size=16), loss_fn)
    outs, targets = (torch.cat(t) for t in zip(*seen))
    assert targets.shape == (64, 3) and ((targets > 0).sum(1) == 2).any()  # mixed: two classes in some rows
    assert row["train_acc"] == (outs.argmax(1) == targets.argmax(1)).sum().item() / 64


def test_a_loss_that_stops_being_finite_is_reported_at_its_own_epoch_and_step():
    """The message names where training went wrong: the epoch and the step (1-based) of the first
    NaN, also in a later window of CHECK_EVERY steps (the tests of a diverging run only read 'step')."""
    calls = []

    def nan_at_step_3(out, y):
        calls.append(1)
        loss = F.cross_entropy(out, y)
        return loss * float("nan") if len(calls) == 3 else loss

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = State(model, torch.optim.SGD(model.parameters(), lr=0.1), None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), epoch=4)
    x, y = torch.randn(50, 1, 2, 2), torch.randint(0, 3, (50,))
    pipeline = Pipeline(TransformConfig(), [0.0], [1.0], (1, 2, 2), 0, 3)
    with pytest.raises(NonFiniteLoss, match=r"^the loss became nan at epoch 5, step 3; training stopped \(most often optimizer\.lr is too high; "
                                            r"a large weight_decay or badly scaled inputs do it too\)$"):
        train_epoch(state, Data(x, y, x, y), pipeline, TrainConfig(batch_size=8), nan_at_step_3)
    losses = [torch.tensor(1.0)] * (CHECK_EVERY + 10)
    losses[CHECK_EVERY + 6] = torch.tensor(float("inf"))
    check_finite(losses[:CHECK_EVERY], 0, 0)  # the first window is finite
    with pytest.raises(NonFiniteLoss, match=rf"^the loss became inf at epoch 1, step {CHECK_EVERY + 7};"):
        check_finite(losses, CHECK_EVERY, 0)


@pytest.mark.parametrize("compiled", ["no", "model", "step"], ids=["eager", "torch.compile", "compiled-step"])
def test_a_single_image_batch_that_batchnorm_cannot_take_is_one_config_error(compiled):
    from cnnlab.compiled_step import CompiledStep
    from cnnlab.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(2, 3))
    optimizer, loss_fn = torch.optim.SGD(model.parameters(), lr=0.1), loss_function("cross_entropy", 0.0)
    state = State(torch.compile(model) if compiled == "model" else model, optimizer, None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    # train.compile on the CPU with train.batch_size=1: every batch is the compiled step's
    batch_size = 1 if compiled == "step" else 4
    if compiled == "step":
        state.compiled_step = CompiledStep(model, optimizer, loss_fn, "none", batch_size)
    x, y = torch.randn(5, 1, 2, 2), torch.randint(0, 3, (5,))
    pipeline = Pipeline(TransformConfig(), [0.0], [1.0], (1, 2, 2), 0, 3)
    with pytest.raises(ConfigError, match="batch of 1 image"):
        train_epoch(state, Data(x, y, x, y), pipeline, TrainConfig(batch_size=batch_size), loss_fn)


def test_a_single_image_test_batch_in_training_mode_is_one_config_error():
    """train.eval_mode=false evaluates with BatchNorm over each batch: a last test batch of one image
    ended in an 83-line traceback, where the same training batch was one line."""
    from cnnlab.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(2, 3))
    x, y = torch.randn(5, 1, 2, 2), torch.randint(0, 3, (5,))
    loss_fn = loss_function("cross_entropy", 0.0)
    with pytest.raises(ConfigError, match=r"^a test batch of 1 image\(s\) is too small for this model's BatchNorm in training mode "
                                          r"\(train.eval_mode: false\); choose train.eval_batch_size or dataset.test_subset"):
        evaluate(model, x, y, 4, loss_fn, eval_mode=False)
    # in eval mode (evaluate's default, from a model in training mode) the running statistics serve one image
    with torch.no_grad():
        expected = (copy.deepcopy(model).eval()(x).argmax(1) == y).float().mean().item()
    assert model.training
    assert evaluate(model, x, y, 4, loss_fn)[1] == pytest.approx(expected)
    assert model.training  # given back as it came


def test_weights_broken_by_the_last_step_fail_the_run_at_its_evaluation():
    """The losses only check the weights a step starts from: weights made NaN by the last step of
    the last epoch gave a run that completed with a NaN test loss (a bare NaN in summary.json)."""

    class Breaking(torch.optim.SGD):
        def step(self, closure=None):
            super().step(closure)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    state = State(model, Breaking(model.parameters(), lr=0.1), None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))
    pipeline = Pipeline(TransformConfig(), [0.0], [1.0], (1, 2, 2), 0, 3)
    rows = []
    with pytest.raises(NonFiniteLoss, match=r"^the test loss became nan after epoch 1; training stopped"):
        engine.fit(state, Data(x, y, x, y), pipeline, TrainConfig(batch_size=8), loss_function("cross_entropy", 0.0), on_epoch=lambda row, _: rows.append(row))
    assert rows == [] and state.epoch == 0  # the epoch is not counted as complete


# ---------------------------------------------------------------------------- gradient layouts
class _GradLayouts(torch.utils._python_dispatch.TorchDispatchMode):
    """Records, for each pooling backward, whether the gradient it is given is channels-last."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.avg_pool2d_backward.default, torch.ops.aten.max_pool2d_with_indices_backward.default):
            self.seen.append((func.__name__.split(".")[0], args[0].is_contiguous(memory_format=torch.channels_last)))
        return func(*args, **(kwargs or {}))


def _lenet_step(hooked: bool, batch: int, pooling: str = "avg"):
    torch.manual_seed(0)
    model = build_model(LeNetModel(name="lenet", pooling=pooling), (1, 28, 28), 10).to(memory_format=torch.channels_last)
    if hooked:
        engine.gradients_channels_last(model)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    with _GradLayouts() as layouts:
        F.cross_entropy(model(x), y).backward()
    return layouts.seen, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_the_pooling_before_flatten_gets_a_channels_last_gradient_and_the_same_values(pooling):
    seen, grads = _lenet_step(hooked=True, batch=100, pooling=pooling)
    # backward runs last layer first: the pooling before Flatten is the first one seen
    assert [layout for _, layout in seen] == [True, True], seen
    plain, plain_grads = _lenet_step(hooked=False, batch=100, pooling=pooling)
    assert [layout for _, layout in plain] == [False, True], plain  # what the hook is for
    assert all(torch.equal(grads[n], plain_grads[n]) for n in grads)  # bit for bit


def test_few_features_keep_the_gradient_as_it_comes():
    """Below GRAD_COPY_MIN values the copy and the hook's Python cost more than they save."""
    batch = engine.GRAD_COPY_MIN // 400 - 1  # LeNet's features: 16 x 5 x 5 = 400 per image
    seen, _ = _lenet_step(hooked=True, batch=batch)
    assert [layout for _, layout in seen] == [False, True], seen
