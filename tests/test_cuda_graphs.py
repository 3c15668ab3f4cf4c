"""CUDA graphs of the training step (engine.StepGraph, `train.cuda_graphs`): a run whose steps are
replayed from a graph trains exactly like one whose steps run one kernel launch at a time, resumes
exactly, and the CPU never builds one; and with `train.deterministic` (the default) a seed gives
the same numbers on every run; a step CUDA cannot capture ends the run in one line. All but the
last three tests need a CUDA device.

Before train.deterministic, on an H200, replayed and ordinary runs were equal to the last bit for
the fc, bf16 LeNet, fastnet and toy cases; for the float32 CNN the train loss differed in the
seventh digit (cuDNN's default algorithms may add up in any order)."""

import gc
import re

import pandas as pd
import pytest
import torch

from cnnlab.config import load_config
from cnnlab.engine import StepGraph, fit, steps_per_epoch
from cnnlab.experiment import run, setup
from conftest import ROOT, needs_cuda


# 300 MNIST / 600 CIFAR training images in batches of 32: nine or eighteen full batches, then a short
# one, which runs as an ordinary step; the second epoch replays the graph captured in the first.
# The toy's two examples make one batch per epoch, so its graph is captured in its fourth epoch.
CASES = {
    "fc": "dataset: {name: mnist}\nmodel: {name: fc, hidden: [32]}\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9}\ntrain: {epochs: 2, batch_size: 32}",
    "cnn": "dataset: {name: mnist}\nmodel: {name: cnn}\noptimizer: {name: adam, lr: 0.01}\nschedule: {name: step, step_size: 1, gamma: 0.5}\ntrain: {epochs: 2, batch_size: 32}",
    "lenet_bf16": "dataset: {name: mnist}\nmodel: {name: lenet}\noptimizer: {name: sgd, lr: 0.5}\ntrain: {amp: bf16, epochs: 2, batch_size: 32}",
    "trashnet_batchnorm": "dataset: {name: cifar10}\nmodel: {name: trashnet}\noptimizer: {name: sgd, lr: 0.01, momentum: 0.9}\ntrain: {epochs: 2, batch_size: 32}",
    "keras_cnn_dropout": "dataset: {name: cifar10}\nmodel: {name: keras_cnn}\noptimizer: {name: rmsprop, lr: 0.001}\ntrain: {epochs: 2, batch_size: 32}",
    "fastnet_augmented": "dataset: {name: cifar10}\nmodel: {name: fastnet}\ntransform: {augment: {hflip: true, crop_padding: 2}}\n"
    "optimizer: {name: sgd, lr: 0.05, momentum: 0.85, nesterov: true}\nloss: {label_smoothing: 0.2}\ntrain: {epochs: 2, batch_size: 32}",
    "lenet5_classic_onecycle": "dataset: {name: mnist}\nmodel: {name: lenet5_classic}\noptimizer: {name: adam, lr: 0.003}\n"
    "schedule: {name: onecycle, pct_start: 0.2}\ntrain: {epochs: 2, batch_size: 32}",
    "toy_bce": "dataset: {name: toy}\ntransform: {normalize: none}\nmodel: {name: toy}\noptimizer: {name: adam, lr: 0.01}\n"
    "loss: {name: bce}\ntrain: {batch_size: 2, epochs: 8, eval_batch_size: 2}",
}


def config_file(tmp_path, case: str):
    path = tmp_path / f"{case}.yaml"
    path.write_text(f"name: {case}\nseed: 7\ndevice: cuda\n{CASES[case]}\n")
    return path


def train(path, tiny_data, graphs: bool, device: str = "cuda"):
    cfg = load_config(path, [f"train.cuda_graphs={str(graphs).lower()}", f"device={device}"])
    data, pipeline, state, loss_fn = setup(cfg, torch.device(device), tiny_data)
    rows = []
    fit(state, data, pipeline, cfg.train, loss_fn, on_epoch=lambda row, _: rows.append(row))
    weights = {k: v.detach().cpu() for k, v in state.model.state_dict().items()}
    bs, n = cfg.train.batch_size, len(data.x_train)
    steps = cfg.train.epochs * steps_per_epoch(n, bs, None)
    ordinary_steps = StepGraph.WARMUP + (cfg.train.epochs if n % bs else 0)  # the warm-up and the short batches
    return pd.DataFrame(rows).drop(columns=["epoch_seconds", "eval_seconds", "samples_per_sec"]), weights, state, steps - ordinary_steps


@needs_cuda
@pytest.mark.parametrize("case", list(CASES))
def test_replayed_steps_train_exactly_like_ordinary_ones(case, tiny_data, tmp_path):
    path = config_file(tmp_path, case)
    ordinary, ordinary_weights, plain, _ = train(path, tiny_data, graphs=False)
    graphed, graphed_weights, state, replays = train(path, tiny_data, graphs=True)

    assert plain.step_graph is None
    graph = state.step_graph
    assert graph is not None and graph.graph is not None
    assert graph.replays == replays > 0
    pd.testing.assert_frame_equal(graphed, ordinary, check_exact=True)
    for name, tensor in ordinary_weights.items():
        assert torch.equal(graphed_weights[name], tensor), name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_run_on_the_second_gpu_captures_its_steps_there(tiny_data, tmp_path):
    """Streams and captures follow torch.cuda's current device (cuda:0 unless set): a graph captured
    from there would hold none of cuda:1's kernels, and every replay would do nothing."""
    path = config_file(tmp_path, "cnn")
    ordinary, _, _, _ = train(path, tiny_data, graphs=False, device="cuda:1")
    graphed, _, state, replays = train(path, tiny_data, graphs=True, device="cuda:1")
    assert state.step_graph.replays == replays > 0
    pd.testing.assert_frame_equal(graphed, ordinary, check_exact=True)


@needs_cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["ordinary", "graphed"])
@pytest.mark.parametrize("case", ["cnn", "trashnet_batchnorm"])
def test_a_seed_gives_the_same_numbers_on_every_run(case, graphs, tiny_data, tmp_path):
    path = config_file(tmp_path, case)
    first, first_weights, _, _ = train(path, tiny_data, graphs)
    second, second_weights, _, _ = train(path, tiny_data, graphs)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert all(torch.equal(second_weights[k], v) for k, v in first_weights.items())


@needs_cuda
def test_graphed_runs_leave_no_gpu_memory_behind(tiny_data, tmp_path):
    """A study or the bench trains many runs in one process: what one graphed run allocated (its
    graph's pool, a stream's cuBLAS workspace) must not stay allocated after it."""
    path = config_file(tmp_path, "cnn")

    def allocated_after_a_run() -> int:
        train(path, tiny_data, graphs=True)
        gc.collect()
        return torch.cuda.memory_allocated()

    first = allocated_after_a_run()
    later = [allocated_after_a_run() for _ in range(3)]
    assert max(later) <= first + 2**20, (first, later)


@needs_cuda
def test_a_resumed_graphed_run_is_the_run_that_was_never_stopped(tiny_data, tmp_path, monkeypatch):
    """The resumed run captures a new graph after its own warm-up steps; dropout's masks, the
    optimizer's state and the schedule come back as without graphs."""
    replays = []
    real_replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: replays.append(1) or real_replay(graph))
    path = config_file(tmp_path, "keras_cnn_dropout")
    overrides = ["train.batch_size=32", "schedule={name: step, step_size: 1, gamma: 0.5}"]
    whole = run(load_config(path, [*overrides, "train.epochs=3"]), runs_dir=tmp_path / "whole", data_dir=tiny_data)
    part = run(load_config(path, [*overrides, "train.epochs=1"]), runs_dir=tmp_path / "part", data_dir=tiny_data)
    run(load_config(path, [*overrides, "train.epochs=3"]), resume=part.path)
    metrics = [pd.read_csv(p / "metrics.csv").drop(columns=["epoch_seconds", "eval_seconds", "samples_per_sec"]) for p in (part.path, whole.path)]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)
    # 600 images in batches of 32: 18 full batches an epoch; the graph is captured after the first
    # 3 steps of the whole run and of the resumed one
    assert len(replays) == (3 * 18 - 3) + (18 - 3) + (2 * 18 - 3)


def test_the_cpu_trains_without_a_graph(tiny_data, tmp_path):
    path = tmp_path / "fc.yaml"
    path.write_text("name: fc\ndevice: cpu\ndataset: {name: mnist}\nmodel: {name: fc, hidden: [8]}\ntrain: {max_steps: 5}\n")
    cfg = load_config(path)
    assert cfg.train.cuda_graphs and cfg.train.deterministic  # on by default, and no-ops off CUDA
    deterministic = torch.backends.cudnn.deterministic
    data, pipeline, state, loss_fn = setup(cfg, torch.device("cpu"), tiny_data)
    fit(state, data, pipeline, cfg.train, loss_fn)
    assert state.step_graph is None and state.epoch == 1
    assert torch.backends.cudnn.deterministic == deterministic


def test_a_step_cuda_cannot_capture_ends_the_run_in_one_line(monkeypatch):
    """A model with an op CUDA cannot capture (a host sync, say) makes torch.cuda.graph raise when the
    capture ends: the run gets one line that names the way out, and the stream in use is restored.
    Runs on the CPU: torch.cuda's capture is replaced by one that fails as CUDA's does."""
    import contextlib

    from cnnlab import engine
    from cnnlab.errors import ConfigError

    streams = []

    @contextlib.contextmanager
    def failing_capture(graph, stream=None):
        yield
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors might be reported later")

    monkeypatch.setattr(engine, "capture_stream", lambda device: "side stream")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", failing_capture)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: "default stream")
    monkeypatch.setattr(torch.cuda, "set_stream", streams.append)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    step = StepGraph(model, engine.loss_function("cross_entropy", 0.0), "none", 2, torch.device("cpu"))
    with pytest.raises(ConfigError) as e:
        step._capture(torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(2, 1, 2, 2), torch.tensor([0, 2]))
    assert str(e.value) == (
        "this model's training step cannot be captured as a CUDA graph (CUDA error: operation not permitted "
        "when stream is capturing); set train.cuda_graphs=false"
    )
    assert streams == ["default stream"] and step.graph is None


def test_the_gpu_report_runs_every_test_only_a_gpu_runs():
    """scripts/gpu_report.sh is how the tests that need CUDA get run (README's GPU section): a test
    marked needs_cuda in a file it does not name would skip everywhere, never run. test_resume's two
    CUDA tests were such: the script named only this file."""
    script = (ROOT / "scripts" / "gpu_report.sh").read_text().replace("\\\n", " ")  # one line per command
    step = next(line for line in script.splitlines() if line.startswith("step gpu_tests "))
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        marked = re.findall(r"^@needs_cuda\n(?:@.*\n)*def (test_\w+)", path.read_text(), re.M)
        assert len(marked) == path.read_text().count("\n@needs_cuda\n"), f"{path.name}: a @needs_cuda the pattern does not follow to its test"
        found += marked
        for name in marked:
            assert f"tests/{path.name} " in step + " " or f"tests/{path.name}::{name}" in step, (path.name, name)
    assert len(found) >= 6, found  # this file's four and test_resume's two at least
