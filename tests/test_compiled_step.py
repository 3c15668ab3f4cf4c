"""train.compile on the CPU: the whole training step compiled, ahead of time and kept in cnnlab's
cache for models that are a function of their parameters alone (cnnlab/aot_step.py: fc, cnn,
lenet), else by torch.compile in each process (cnnlab/compiled_step.py: BatchNorm, dropout, bf16).

Either must train as the ordinary step does (the same parameters, optimizer state and BatchNorm
statistics, to float rounding), compile once (torch.compile: twice for SGD's momentum, which the
first step creates; never again for a schedule's new learning rate or an epoch's short last batch),
resume exactly, leave frozen parameters and those the loss never reaches alone, say how long it
compiled, and fail in one line saying why without a working C++ compiler. A compiled step kept in
the cache is loaded by a new process, not compiled again.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch._functorch.config

from cnnlab.aot_step import AotStep, prune
from cnnlab.compiled_step import CompiledStep
from cnnlab.config import load_config
from cnnlab.engine import fit
from cnnlab.experiment import run, setup
from test_errors import cli, error_line
from test_resume import cnnlab_here, metrics

needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler")
pytestmark = needs_cxx

FC = """name: compiled
seed: 1
device: cpu
dataset: {name: mnist, download: false}
model: {name: fc, hidden: [16]}
train: {epochs: 2, batch_size: 32, threads: 1, checkpoint: true}
"""
OPTIMIZERS = {  # 300 images: 9 full batches and a short one of 12 per epoch
    "sgd-momentum-step": "optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\nschedule: {name: step, step_size: 1, gamma: 0.5}\n",
    "adam-onecycle": "optimizer: {name: adam, lr: 0.003}\nschedule: {name: onecycle, pct_start: 0.3}\n",
}


def config(tmp_path, text: str, *overrides: str):
    path = tmp_path / "compiled.yaml"
    path.write_text(text)
    return load_config(path, list(overrides))


def trained(cfg, data_dir, data_too: bool = False):
    """The state after fit() on cfg, and its epochs' rows (and the prepared data, with data_too)."""
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"data_dir": str(data_dir)})})
    data, pipeline, state, loss_fn = setup(cfg, torch.device("cpu"))
    rows = []
    fit(state, data, pipeline, cfg.train, loss_fn, on_epoch=lambda row, st: rows.append(row))
    return (state, rows, data) if data_too else (state, rows)


def assert_close_states(eager, compiled, atol: float) -> None:
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=atol, rtol=0), name
    for key, values in eager.optimizer.state_dict()["state"].items():
        for name, a in values.items():
            assert torch.allclose(a.float(), compiled.optimizer.state_dict()["state"][key][name].float(), atol=atol, rtol=0), name


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_compiled_step_trains_as_the_ordinary_one(tiny_data, tmp_path, optimizer):
    text = FC + OPTIMIZERS[optimizer]
    eager, eager_rows = trained(config(tmp_path, text), tiny_data)
    compiled, rows = trained(config(tmp_path, text, "train.compile=true"), tiny_data)

    assert eager.compiled_step is None and isinstance(compiled.compiled_step, AotStep)
    # compiled here, and its test process ran it (aot_probe.py); or taken from the cache, which
    # holds only steps whose test process ran them
    assert compiled.compiled_step._fallback is None and compiled.compiled_step.crashed is None
    # its parameters, not the model: the model itself is not compiled
    assert type(compiled.model) is type(eager.model)
    assert_close_states(eager, compiled, atol=1e-5 if optimizer.startswith("sgd") else 1e-4)
    assert [r["lr"] for r in rows] == [r["lr"] for r in eager_rows]  # the schedule went on as usual
    for a, b in zip(eager_rows, rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    step = compiled.compiled_step
    # one graph, whatever the optimizer (its update runs after it): compiled by the first of these
    # runs, taken from the cache by the second. Never again for a new learning rate (onecycle changes
    # it every step) or for the short last batches, which are ordinary steps
    assert step.graphs + step.loaded == 1
    assert 0 < step.compile_seconds < sum(r["epoch_seconds"] for r in rows)


CONV_POOL_MODELS = {  # their Conv2d + MaxPool2d pairs compiled as one convolution each (conv_pool.py)
    "cnn-sgd": ("{name: cnn, n_feature: 6}", "sgd-momentum-step"),
    "lenet-relu-max-adam": ("{name: lenet, activation: relu, pooling: max}", "adam-onecycle"),
}


@pytest.mark.parametrize("case", list(CONV_POOL_MODELS))
def test_conv_pool_models_compiled_train_as_the_ordinary_step(tiny_data, tmp_path, case):
    model, optimizer = CONV_POOL_MODELS[case]
    text = FC.replace("{name: fc, hidden: [16]}", model) + OPTIMIZERS[optimizer]
    eager, eager_rows = trained(config(tmp_path, text), tiny_data)
    compiled, rows = trained(config(tmp_path, text, "train.compile=true"), tiny_data)

    assert isinstance(compiled.compiled_step, AotStep)
    assert compiled.compiled_step._compute is not compiled.model  # the pairs were fused
    assert_close_states(eager, compiled, atol=1e-5 if optimizer.startswith("sgd") else 1e-4)
    for a, b in zip(eager_rows, rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
        assert b["test_acc"] == a["test_acc"]


def test_a_batch_larger_than_the_training_set_is_compiled_as_that_set(tiny_data, tmp_path):
    cfg = config(tmp_path, FC + OPTIMIZERS["adam-onecycle"], "train.compile=true", "train.batch_size=1000")
    compiled, rows = trained(cfg, tiny_data)

    step = compiled.compiled_step
    assert step.batch_size == 300 and step.graphs + step.loaded == 1 and step.compile_seconds > 0


def test_frozen_parameters_stay_and_batchnorm_statistics_move(tiny_data, tmp_path):
    # fastnet: BatchNorm scales frozen at 1 (requires_grad off), running statistics updated in place
    text = FASTNET + OPTIMIZERS["sgd-momentum-step"]
    eager, _ = trained(config(tmp_path, text, "train.epochs=1"), tiny_data)
    compiled, _ = trained(config(tmp_path, text, "train.epochs=1", "train.compile=true"), tiny_data)

    assert isinstance(compiled.compiled_step, CompiledStep)  # BatchNorm's statistics: torch.compile's
    frozen = [(n, p) for n, p in compiled.model.named_parameters() if not p.requires_grad]
    untouched = dict(eager.model.named_parameters())  # the eager step leaves them as they were set up
    assert len(frozen) == 3 and all(torch.equal(p, untouched[n]) for n, p in frozen)
    assert sum(torch.equal(p, torch.ones_like(p)) for _, p in frozen) == 2  # BatchNorm scales (and the whitening filters)
    assert all(p not in compiled.optimizer.state or "momentum_buffer" not in compiled.optimizer.state[p] for _, p in frozen)
    buffers = dict(compiled.model.named_buffers())
    for name, value in eager.model.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert int(buffers[name]) == int(value) == 10  # every step counted, compiled or not
        else:
            assert not torch.equal(value, torch.zeros_like(value) if "mean" in name else torch.ones_like(value))
            assert torch.allclose(buffers[name], value, atol=1e-4), name
    assert_close_states(eager, compiled, atol=1e-4)


FASTNET = FC.replace("{name: fc, hidden: [16]}", "{name: fastnet, widths: [8], bn_eps: 0.001}")


def test_a_warm_step_follows_the_modules_train_and_eval_mode(tiny_data, tmp_path):
    # once warm, a step skips dynamo's guards; the modules' mode is one of the things it must still see
    compiled, _, data = trained(config(tmp_path, FASTNET + OPTIMIZERS["sgd-momentum-step"], "train.compile=true"), tiny_data, data_too=True)
    step, model = compiled.compiled_step, compiled.model
    xb, yb = data.x_train[:32], data.y_train[:32]
    statistics = {n: b.clone() for n, b in model.named_buffers()}

    model.eval()  # BatchNorm normalizes with its running statistics and leaves them as they are
    with torch.no_grad():
        expected = model(xb)
    out, _ = step(xb, yb)
    assert torch.allclose(out, expected, atol=1e-5)
    assert all(torch.equal(b, statistics[n]) for n, b in model.named_buffers())
    assert step.graphs == 3  # SGD's two, and one for evaluation mode

    model.train()
    with torch.no_grad():
        expected = model(xb)  # batch statistics (this call moves the running ones: compare after it)
    moved = {n: b.clone() for n, b in model.named_buffers()}
    out, _ = step(xb, yb)
    assert torch.allclose(out, expected, atol=1e-5)
    means = [n for n in moved if n.endswith("running_mean")]
    assert means and all(not torch.equal(b, moved[n]) for n, b in model.named_buffers() if n in means)
    assert step.graphs == 3  # back to the training graph it had


def test_a_newer_compiled_step_does_not_mislead_an_older_warm_one(tiny_data, tmp_path):
    # a new CompiledStep empties dynamo's cache, where the older one's graphs were: the older one,
    # warm, must not skip the guards that make dynamo compile its graphs again
    older, _, data = trained(config(tmp_path, FASTNET + OPTIMIZERS["sgd-momentum-step"], "train.compile=true", "train.epochs=1"), tiny_data, data_too=True)
    newer, _ = trained(config(tmp_path, FASTNET.replace("widths: [8]", "widths: [4]") + OPTIMIZERS["sgd-momentum-step"], "train.compile=true", "train.epochs=1"), tiny_data)
    xb, yb = data.x_train[:32], data.y_train[:32]

    assert isinstance(older.compiled_step, CompiledStep) and isinstance(newer.compiled_step, CompiledStep)
    with torch.no_grad():
        expected = older.model(xb)
    out, _ = older.compiled_step(xb, yb)
    assert torch.allclose(out, expected, atol=1e-5)
    # SGD's two graphs each, and the older one's training graph again
    assert older.compiled_step.graphs == 3 and newer.compiled_step.graphs == 2


@pytest.mark.parametrize("model", ["{name: fc, hidden: [16]}", "{name: keras_cnn}"], ids=["fc", "keras_cnn-dropout"])
def test_a_compiled_run_resumes_exactly(tiny_data, tmp_path, capsys, monkeypatch, model):
    # keras_cnn's dropout: the resumed session's first full batch must be compiled, as the
    # uninterrupted run's was (an ordinary step would draw its masks from other random numbers)
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))  # fc: `whole` compiles, the others load
    path = tmp_path / "compiled.yaml"
    path.write_text(FC.replace("{name: fc, hidden: [16]}", model) + OPTIMIZERS["sgd-momentum-step"] + "transform: {augment: {hflip: true}}\n")
    whole = run(load_config(path, ["train.compile=true"]), runs_dir=tmp_path / "whole", data_dir=tiny_data)
    first = run(load_config(path, ["train.compile=true", "train.epochs=1"]), runs_dir=tmp_path / "parts", data_dir=tiny_data)
    done = cnnlab_here(capsys, "train", "--resume", first.path, "train.epochs=2")

    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(metrics(first.path), metrics(whole.path))
    summary = json.loads((first.path / "summary.json").read_text())
    # both sessions compiled (fc: loaded the step `whole` compiled), the resumed one once (the
    # optimizer's state came with the checkpoint)
    assert summary["compile_seconds"] > first.summary["compile_seconds"] > 0
    assert summary["compile_seconds"] < summary["train_seconds"]
    cached = model == "{name: fc, hidden: [16]}"
    assert summary["compiled_step_cached"] is cached and whole.summary["compiled_step_cached"] is False
    assert "compiled_step_crashed" not in summary  # its step ran in its test process
    line = done.stdout.splitlines()[-2]
    if cached:  # milliseconds: not "0.0 s of it compiling"
        assert line.endswith("s training on cpu (the compiled step taken from the cache)")
    else:
        assert line.endswith(" s of it compiling)")


FAILING_CXX = """#!/bin/sh
# a compiler that runs but cannot build inductor's kernels, as g++ without OpenMP's headers
for a in "$@"; do case "$a" in -E|--version|-v) exec g++ "$@";; esac; done
echo "kernel.cpp:1:10: fatal error: omp.h: No such file or directory" >&2
exit 1
"""


@pytest.mark.parametrize("model", ["fc", "fastnet"], ids=["ahead-of-time", "torch.compile"])
@pytest.mark.parametrize("compiler,says", [(None, "No working C++ compiler"), (FAILING_CXX, "fatal error: omp.h: No such file or directory")], ids=["none", "failing"])
def test_no_working_cxx_compiler_is_one_line_that_says_why(tiny_data, tmp_path, compiler, says, model):
    path = tmp_path / "compiled.yaml"
    path.write_text((FC if model == "fc" else FASTNET) + OPTIMIZERS["sgd-momentum-step"])
    cxx = tmp_path / "g++"  # none, or one that fails
    if compiler:
        cxx.write_text(compiler)
        cxx.chmod(0o755)
    # caches of its own: a kernel or a step compiled before would need no compiler
    env = {**os.environ, "CXX": str(cxx), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"), "CNNLAB_CACHE_DIR": str(tmp_path / "steps")}
    done = cli("train", path, "train.compile=true", "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", env=env)

    assert done.returncode == 2
    line = error_line(done.stderr)
    assert line.startswith("error: train.compile: this training step could not be compiled (") and says in line
    assert line.endswith("set train.compile=false")
    run_dir = done.stdout.splitlines()[-1]
    assert json.loads((tmp_path / "runs" / os.path.basename(run_dir) / "summary.json").read_text())["status"] == "failed"


def test_bench_keeps_the_compile_time_apart_from_cnnlabs_seconds(tiny_data, tmp_path, monkeypatch):
    from test_bench import _markdown_tables, cnnlab

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "steps"))  # compiled here, not taken from the cache
    done = cnnlab("bench", "--quick", "--compile", "--cases", "fc", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--markdown")

    assert done.returncode == 0, done.stderr
    speed, _ = _markdown_tables(done.stdout)
    assert list(speed[0])[:5] == ["case", "budget", "reference s", "cnnlab s", "cnnlab compile s"]
    row = pd.read_csv(tmp_path / "bench" / "results.csv").iloc[0]
    assert bool(row["compile"]) and row["cnnlab_compile_seconds"] == pytest.approx(float(speed[0]["cnnlab compile s"]), rel=0.01)
    # 5 steps of FC2Layer take milliseconds, compiling them a second or more: were the compile
    # counted in cnnlab's seconds, they would be the larger
    assert 0 < row["cnnlab_seconds"] < row["cnnlab_compile_seconds"]
    assert f"cnnlab {speed[0]['cnnlab s']} s (and compiling {speed[0]['cnnlab compile s']} s)" in done.stdout


class WithAnUnusedParameter(torch.nn.Module):
    """A linear layer, and a parameter that trains but that forward never uses (the loss never reaches it)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.unused = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.linear(x)


UNUSED_OPTIMIZERS = {
    "sgd-weight-decay-momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1),
}


@pytest.mark.parametrize("kind", ["ahead-of-time", "torch.compile"])
@pytest.mark.parametrize("optimizer", list(UNUSED_OPTIMIZERS))
def test_a_parameter_the_loss_never_reaches_is_left_alone_as_the_ordinary_step_leaves_it(optimizer, kind):
    # the ordinary step gives it no .grad, so the optimizer skips it: no weight decay, no state
    torch.manual_seed(0)
    x, y = torch.randn(3, 8, 4), torch.randint(0, 3, (3, 8))
    models = [WithAnUnusedParameter(), WithAnUnusedParameter()]
    models[1].load_state_dict(models[0].state_dict())
    start = models[0].linear.weight.detach().clone()
    eager_opt, compiled_opt = (UNUSED_OPTIMIZERS[optimizer](m.parameters()) for m in models)
    loss = torch.nn.functional.cross_entropy
    if kind == "ahead-of-time":
        step = AotStep(models[1], compiled_opt, loss, ("cross_entropy", 0.0), batch_size=8)
    else:
        step = CompiledStep(models[1], compiled_opt, loss, "none", batch_size=8)
    for xb, yb in zip(x, y):
        eager_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(models[0](xb), yb).backward()
        eager_opt.step()
        step(xb, yb)

    eager, compiled = models
    assert torch.equal(compiled.unused, torch.ones(3)) and torch.equal(eager.unused, torch.ones(3))
    assert compiled.unused not in compiled_opt.state and eager.unused not in eager_opt.state
    # a checkpoint's optimizer state: linear's weight and bias (1 and 2), not unused (0, the module's own)
    assert compiled_opt.state_dict()["state"].keys() == eager_opt.state_dict()["state"].keys() == {1, 2}
    assert not torch.allclose(compiled.linear.weight, start, atol=1e-2)  # the rest trained
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def cnn_config(tmp_path):
    """A config file for study A's CNN, trained with SGD."""
    model, optimizer = CONV_POOL_MODELS["cnn-sgd"]
    path = tmp_path / "compiled.yaml"
    path.write_text(FC.replace("{name: fc, hidden: [16]}", model) + OPTIMIZERS[optimizer])
    return path


def last_line_in_a_new_process(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


@pytest.mark.skipif(not getattr(torch._functorch.config, "enable_autograd_cache", False), reason="this torch keeps no AOT autograd cache")
def test_a_new_process_loads_the_conv_pool_steps_compiled_graphs_from_the_cache(tiny_data, tmp_path):
    """The blocked CNN's step (torch.compile's under bf16 autocast) was compiled again in every new
    process (4 s where 2.7 would do): its gradient routing was an autograd.Function, which keeps a
    graph out of AOT autograd's cache, and the optimizer twin's state followed a set's order (the
    tensors' ids), so the graph changed from process to process. Now a second process finds every
    graph the first compiled."""
    path = cnn_config(tmp_path)
    code = (
        "import json, sys; from torch._dynamo.utils import counters; from cnnlab.config import load_config; "
        "from cnnlab.experiment import run; "
        f"run(load_config({str(path)!r}, ['train.compile=true', 'train.amp=bf16', 'train.epochs=1', 'train.max_steps=4']), "
        f"runs_dir={str(tmp_path / 'runs')!r}, data_dir={str(tiny_data)!r}); "
        "print(json.dumps(dict(counters['aot_autograd'])))"
    )
    for process in (1, 2):
        counts = json.loads(last_line_in_a_new_process(code))
        assert counts.get("autograd_cache_bypass", 0) == 0, counts
    assert counts["autograd_cache_hit"] == counts["total"] and "autograd_cache_miss" not in counts, counts


def test_a_new_process_takes_the_compiled_step_from_the_cache(tiny_data, tmp_path, monkeypatch):
    """Compiled ahead of time, study A's CNN's step is compiled by the first process and loaded by
    the next (no compiling: milliseconds). (That another batch size is another step, compiled anew:
    test_the_cache_key_changes_with_what_the_graph_depends_on.)"""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    path = cnn_config(tmp_path)
    code = (
        "import torch; from cnnlab.config import load_config; from cnnlab.experiment import setup; "
        "from cnnlab.engine import fit; "
        f"cfg = load_config({str(path)!r}, ['train.compile=true', 'train.epochs=1']); "
        f"cfg = cfg.model_copy(update={{'dataset': cfg.dataset.model_copy(update={{'data_dir': {str(tiny_data)!r}}})}}); "
        "data, pipeline, state, loss_fn = setup(cfg, torch.device('cpu')); fit(state, data, pipeline, cfg.train, loss_fn); "
        "step = state.compiled_step; print(type(step).__name__, step.graphs, step.loaded, step.compile_seconds)"
    )
    runs = []
    for process in (1, 2):
        kind, graphs, loaded, seconds = last_line_in_a_new_process(code).split()
        runs.append((kind, int(graphs), int(loaded), float(seconds)))

    assert [r[:3] for r in runs] == [("AotStep", 1, 0), ("AotStep", 0, 1)]
    assert runs[1][3] < 0.5 < runs[0][3]  # loading takes milliseconds, compiling seconds
    assert len(list((tmp_path / "cache" / "steps").glob("*.pt2"))) == 1


class Scaled(torch.nn.Module):
    """A linear layer whose outputs are multiplied by a factor its repr does not show."""

    def __init__(self, scale: float):
        super().__init__()
        self.linear, self.scale = torch.nn.Linear(16, 3), scale

    def forward(self, x):
        return self.linear(x.flatten(1)) * self.scale


def tiny_step(model):
    """An ahead-of-time step for model on 8 images of 1x4x4, and such a batch."""
    torch.manual_seed(0)
    step = AotStep(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy, ("cross_entropy", 0.0), 8)
    return step, torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))


def test_a_cached_step_that_cannot_be_read_is_compiled_again(tmp_path, monkeypatch):
    # a file cut short (a full disk, a copy interrupted) must cost a compile, not the run
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))

    def step():
        return tiny_step(model)[0]

    _, x, y = tiny_step(model)
    first = step()
    first(x, y)
    (cached,) = (tmp_path / "steps").glob("*.pt2")
    cached.write_bytes(cached.read_bytes()[:1000])
    second = step()
    before = [p.detach().clone() for p in model.parameters()]
    out, loss = second(x, y)

    assert (first.graphs, second.graphs, second.loaded) == (1, 1, 0)
    assert cached.stat().st_size > 1000  # replaced by the new one
    assert torch.allclose(out, torch.nn.functional.linear(x.flatten(1), *before), atol=1e-6)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(out, y)))
    os.utime(cached, (0, 0))
    third = step()
    third(x, y)
    assert (third.graphs, third.loaded) == (0, 1)  # and the new file is read
    assert cached.stat().st_mtime > 1e9  # marked as used now: pruning removes it last


def test_the_cache_is_pruned_to_its_size_the_steps_used_longest_ago_first(tmp_path):
    """Every edit of cnnlab, batch size or model makes new steps (about 2 MB each): without pruning
    the cache only grew. After a step is written, the steps used longest ago go until the folder
    is within its size, never the step just written; so do partial files a killed compile left."""
    now = time.time()

    def file(name: str, age: float, size: int = 100) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
        return path

    new = file("new.pt2", 10_000)  # just written, though with an old time: kept whatever its age
    for name, age in (("a.pt2", 300), ("b.pt2", 200), ("c.pt2", 100)):
        file(name, age)
    file(".killed.pt2", 2 * 24 * 3600)  # a compile killed two days ago
    file(".writing.pt2", 5)  # another process's step being written
    file("notes.txt", 10**6)  # not a step

    prune(tmp_path, keep=new, limit=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".writing.pt2", "c.pt2", "new.pt2", "notes.txt"]
    prune(tmp_path, keep=new, limit=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".writing.pt2", "new.pt2", "notes.txt"]


def test_a_cache_that_cannot_be_entered_or_written_costs_a_compile_not_the_run(tmp_path, monkeypatch):
    # a folder of another user's (sudo without -H), a full disk: compiled for the run alone
    from conftest import no_room_for

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    real_is_file = Path.is_file

    def is_file(path):
        if tmp_path in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    no_room_for(monkeypatch, lambda dst: tmp_path in dst.parents)
    step, x, y = tiny_step(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))
    out, loss = step(x, y)

    assert step.graphs == 1 and out.shape == (8, 3) and torch.isfinite(loss)
    assert list((tmp_path / "steps").iterdir()) == []  # no half-written file left behind


def test_a_source_edited_since_import_is_compiled_for_the_run_alone(tmp_path, monkeypatch):
    """The source hash was taken at the first compile: cnnlab edited between a process's import and
    its first step (a git pull during a study) had the old code's step stored under the new code's
    name, which every later process then loaded (its loss that of the old loss function)."""
    import cnnlab
    from cnnlab import aot_step

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    step, x, y = tiny_step(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))
    inputs = [p.detach() for p in step.model.parameters()]
    assert aot_step.step_key(step._compute, (["1.weight", "1.bias"], []), inputs, x, y, step.loss_key) is not None
    monkeypatch.setattr(cnnlab, "IMPORTED_SOURCE", "the source before an edit")
    assert aot_step.step_key(step._compute, (["1.weight", "1.bias"], []), inputs, x, y, step.loss_key) is None
    out, loss = step(x, y)
    assert step.graphs == 1 and out.shape == (8, 3) and torch.isfinite(loss)
    assert not (tmp_path / "steps").exists()  # nothing kept for a later process


def test_a_file_touched_but_unchanged_is_no_change(tmp_path, monkeypatch):
    """What the check compares is the source itself: a file touched (an editor saving it unchanged,
    git stash and pop, a clock ahead) leaves the cache in use and the run clean."""
    import shutil
    import subprocess

    copy = tmp_path / "cnnlab"
    shutil.copytree(Path(__file__).resolve().parents[1] / "cnnlab", copy, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    probe = ("import os, time, cnnlab; os.utime(os.path.join(os.path.dirname(cnnlab.__file__), 'engine.py'), "
             "(time.time() + 600, time.time() + 600)); print(cnnlab.source_changed()); "
             "open(os.path.join(os.path.dirname(cnnlab.__file__), 'engine.py'), 'a').write('# edited\\n'); print(cnnlab.source_changed())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.stdout.split() == ["False", "True"], out.stdout + out.stderr


def test_a_cache_folder_deleted_right_after_a_compile_costs_nothing(tmp_path, monkeypatch):
    """The compiled step was loaded back from the cache file after writing it: a folder deleted in
    between (rm -rf ~/.cache/cnnlab, another process's pruning) failed the run as "could not be compiled"."""
    import shutil

    from cnnlab import aot_step

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(aot_step, "prune", lambda folder, keep: shutil.rmtree(folder))
    step, x, y = tiny_step(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)))
    out, loss = step(x, y)
    assert step.graphs == 1 and out.shape == (8, 3) and torch.isfinite(loss)
    assert not (tmp_path / "cache" / "steps").exists()


def test_the_cache_key_changes_with_what_the_graph_depends_on(monkeypatch):
    from cnnlab import aot_step

    def key(scale=1.0, batch=8):
        step, x, y = tiny_step(Scaled(scale))
        x, y = torch.randn(batch, 1, 4, 4), torch.randint(0, 3, (batch,))
        inputs = [p.detach() for p in step.model.parameters()]
        return aot_step.step_key(step._compute, (["linear.weight", "linear.bias"], []), inputs, x, y, step.loss_key)

    same = key()
    assert key() == same
    assert key(scale=2.0) != same  # not in the repr, but in the module's settings
    assert key(batch=16) != same
    monkeypatch.setattr(aot_step, "cpu_identity", lambda: "another CPU | avx2")
    assert key() != same


PROBE_DIES = """\
# sitecustomize.py: the probe's process dies by a signal at its start (SIGSEGV: as torch 2.11's
# loader did on a 16-core Xeon with a step it had just compiled); every other process starts as usual
import os, signal, sys
if "cnnlab.aot_probe" in sys.orig_argv:
    os.kill(os.getpid(), signal.{})
"""


def test_a_step_that_crashes_when_loaded_is_never_loaded_and_torch_compile_trains_instead(tiny_data, tmp_path, monkeypatch, capsys):
    """torch 2.11 on an H200's host segfaulted inside its package loader with the step just compiled:
    the run died mid-epoch without a word. The step is now tried in a child process first."""
    from cnnlab import aot_step

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(aot_step, "_told", set())  # a crash of this torch's own, told before, is told again
    probe_dies_by(tmp_path, monkeypatch, "SIGSEGV")
    text = FC + OPTIMIZERS["sgd-momentum-step"]
    eager, eager_rows = trained(config(tmp_path, text), tiny_data)
    compiled, rows = trained(config(tmp_path, text, "train.compile=true"), tiny_data)

    step = compiled.compiled_step
    assert isinstance(step, AotStep) and isinstance(step._fallback, CompiledStep)
    assert_close_states(eager, compiled, atol=1e-5)  # trained by torch.compile's step, as the ordinary one
    for a, b in zip(eager_rows, rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    assert step.graphs == step._fallback.graphs >= 1 and step.compile_seconds > step._fallback.compile_seconds > 0
    err = capsys.readouterr().err
    assert err.count("note: train.compile: the step compiled ahead of time crashed when a test process loaded it (killed by SIGSEGV); "
                     "torch.compile's step trains instead") == 1
    assert step.crashed == "killed by SIGSEGV"
    steps = tmp_path / "cache" / "steps"
    (marker,) = steps.glob("*.crashed")
    assert marker.read_text() == "killed by SIGSEGV\n" and not list(steps.glob("*.pt2"))  # never kept for a later run

    # a later run of the same step goes straight to torch.compile's, without compiling this one again
    # (and in this process, without telling it again)
    monkeypatch.setattr(aot_step, "compile_to", lambda *args: pytest.fail("compiled again"))
    again, _ = trained(config(tmp_path, text, "train.compile=true"), tiny_data)
    assert isinstance(again.compiled_step._fallback, CompiledStep) and again.compiled_step.loaded == 0
    assert again.compiled_step.crashed == "killed by SIGSEGV" and capsys.readouterr().err == ""
    monkeypatch.setattr(aot_step, "_told", set())  # as a new process finds it
    done = run(config(tmp_path, text, "train.compile=true", "train.epochs=1"), runs_dir=tmp_path / "runs", data_dir=tiny_data)
    assert f"(killed by SIGSEGV, recorded in {marker})" in capsys.readouterr().err
    assert done.summary["compiled_step_crashed"] == "killed by SIGSEGV"  # the run's own record of it
    assert json.loads((done.path / "summary.json").read_text())["compiled_step_crashed"] == "killed by SIGSEGV"
    # a day later it is tried again, and the marker goes with the next pruning
    day_ago = time.time() - aot_step.STALE_SECONDS - 60
    os.utime(marker, (day_ago, day_ago))
    assert aot_step.recorded_crash(marker.with_suffix(".pt2")) is None
    prune(steps, keep=steps / "other.pt2")
    assert not marker.exists()


def probe_dies_by(tmp_path, monkeypatch, name: str) -> None:
    """Have every later probe process die by the signal name at its start (a sitecustomize on PYTHONPATH)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(PROBE_DIES.format(name))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])))


def test_the_probe_says_why_a_step_fails_in_its_process(tmp_path, monkeypatch):
    from cnnlab.aot_probe import crashes

    junk = tmp_path / "step.pt2"
    junk.write_bytes(b"not a compiled step")
    # the loader's own error, in one line (its wording is torch's): not lasting, as no fault killed it
    why, lasting = crashes(junk, [torch.zeros(2, 3)])
    assert why and "\n" not in why and not why.startswith(("killed", "ModuleNotFoundError", "ImportError")) and not lasting
    # a kill from outside (the out-of-memory killer's SIGKILL) is not the step's fault: no marker
    probe_dies_by(tmp_path, monkeypatch, "SIGKILL")
    assert crashes(junk, [torch.zeros(2, 3)]) == ("killed by SIGKILL", False)


@pytest.mark.parametrize("module", ["cnnlab/aot_probe.py", "json.py"])
def test_the_probe_imports_the_modules_this_process_runs(tmp_path, monkeypatch, module):
    """The child put its working directory first on its path: another cnnlab checkout there (or a
    torch source tree, or a json.py) was what it imported, and its failure marked a good step as crashed."""
    from cnnlab.aot_probe import crashes

    junk = tmp_path / "step.pt2"
    junk.write_bytes(b"not a compiled step")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    expected = crashes(junk, [torch.zeros(2, 3)])  # the loader's own error
    (tmp_path / "cnnlab").mkdir()
    (tmp_path / "cnnlab" / "__init__.py").write_text("")
    (tmp_path / module).write_text("import sys\nsys.exit('the working directory has its own')\n")
    monkeypatch.chdir(tmp_path)
    assert crashes(junk, [torch.zeros(2, 3)]) == expected and "its own" not in expected[0]
