"""`cnnlab train` end to end: the CLI on small IDX files, run directory contents, repeatability, and
the studies' accuracy on the real data when it is present."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import load_config
from cnnlab.experiment import build_optimizer, prepare_data, run
from cnnlab.models import build_model
from conftest import ROOT, real_data

METRIC_COLUMNS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds"}


def cnnlab(*args, env=None, timeout=300):
    """Run the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )


def test_cli_train_writes_a_complete_run(tiny_data, tmp_path):
    out = cnnlab("train", "configs/mnist_cnn.yaml", "train.epochs=2", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and run_dir.name.split("-")[2] == "mnist_cnn"
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.csv", "summary.json", "model.pt", "checkpoint.pt"}
    assert not list(run_dir.glob("*.tmp"))

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert METRIC_COLUMNS <= set(metrics.columns) and list(metrics["epoch"]) == [1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2 and summary["params"] == 6422
    assert summary["test_acc"] == metrics["test_acc"].iloc[-1] and summary["train_size"] == 300
    for key in ("test_loss", "train_seconds", "device", "seed", "torch_version", "cnnlab_version", "git_commit", "git_dirty"):
        assert key in summary

    cfg = load_config(run_dir / "config.yaml")  # the resolved config is itself a valid config
    assert cfg.train.epochs == 2 and cfg.device == "cpu"
    model = build_model(cfg.model, (1, 28, 28), 10)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    assert "epoch 1/2" in out.stdout and "epoch 2/2" in out.stdout


def test_a_reader_that_goes_away_does_not_stop_the_training(tiny_data, tmp_path):
    """`cnnlab train ... | head -1`: what follows the first line goes nowhere; the run trains to its end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "configs/mnist_fc.yaml", "train.epochs=100", "--device", "cpu",
         "--data-dir", str(tiny_data), "--runs-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().startswith("epoch 1/100")
        proc.stdout.close()  # 99 epoch lines, the table and the run's path are still to come
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 0, err
    finally:
        proc.kill()
    assert "Traceback" not in err
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs"]) == ("completed", 100)
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 100


def test_a_closed_stdout_does_not_stop_the_training(tiny_data, tmp_path):
    """`cnnlab train ... >&-`: nothing to print to, but the run trains and writes its files."""
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "configs/mnist_fc.yaml", "--device", "cpu", "--data-dir", str(tiny_data), "--runs-dir", str(tmp_path)],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300, preexec_fn=lambda: os.close(1),
    )
    assert out.returncode == 0 and out.stderr == ""
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_output_that_cannot_be_written_is_one_line_and_the_run_still_completes(tiny_data, tmp_path):
    """`cnnlab train ... > /dev/full` (a full disk): the run trains to its end; the lost output is
    one line on stderr and exit 1, not a traceback."""
    with open("/dev/full", "w") as full:
        out = subprocess.run(
            [sys.executable, "-m", "cnnlab", "train", "configs/mnist_fc.yaml", "train.epochs=2", "--device", "cpu",
             "--data-dir", str(tiny_data), "--runs-dir", str(tmp_path)],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300,
        )
    assert (out.returncode, out.stderr) == (1, "error: cannot write the output: No space left on device\n")
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs"]) == ("completed", 2)


def test_print_config_resolves_overrides(tmp_path):
    out = cnnlab("train", "configs/mnist_fc.yaml", "model.hidden=[100]", "optimizer.lr=1e-3", "--print-config")
    assert out.returncode == 0, out.stderr
    assert "hidden:\n  - 100" in out.stdout or "hidden: [100]" in out.stdout
    assert "lr: 0.001" in out.stdout


def test_print_config_of_a_resume_refuses_what_the_resume_refuses(tiny_data, tmp_path):
    """It printed a config with the new optimizer.lr, exit 0, that the resume itself refuses."""
    first = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.max_steps=2"]), runs_dir=tmp_path, data_dir=tiny_data)
    out = cnnlab("train", "--resume", first.path, "optimizer.lr=0.3", "train.epochs=2", "--print-config")
    assert out.returncode == 1 and out.stdout == "" and out.stderr.startswith(f"error: cannot resume {first.path} with another optimizer.lr (0.01, now 0.3)"), out.stderr
    out = cnnlab("train", "--resume", first.path, "train.epochs=2", "--print-config")
    assert out.returncode == 0 and "epochs: 2" in out.stdout, out.stderr


@pytest.mark.parametrize("epochs", [["train.epochs=1"], []], ids=["fewer", "as-many-as-done"])
def test_print_config_of_a_resume_refuses_epochs_the_resume_refuses(tiny_data, tmp_path, epochs):
    """train.epochs below the run's 2 epochs (or none more, on a completed run) printed a config, exit 0."""
    first = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.max_steps=2", "train.epochs=2"]), runs_dir=tmp_path, data_dir=tiny_data)
    printed = cnnlab("train", "--resume", first.path, *epochs, "--print-config")
    resumed = cnnlab("train", "--resume", first.path, *epochs)
    assert resumed.returncode == 1 and resumed.stderr.startswith(f"error: {first.path}") and resumed.stderr.count("\n") == 1, resumed.stderr
    assert (printed.returncode, printed.stdout, printed.stderr) == (resumed.returncode, "", resumed.stderr)


def test_same_seed_gives_the_same_numbers(tiny_data, tmp_path):
    overrides = ["device=cpu", "train.epochs=2", "transform.augment.hflip=true", "transform.augment.translate=2"]
    cfg = load_config(ROOT / "configs/mnist_cnn.yaml", overrides)
    a = run(cfg, runs_dir=tmp_path, data_dir=tiny_data).metrics
    b = run(cfg, runs_dir=tmp_path, data_dir=tiny_data).metrics
    c = run(load_config(ROOT / "configs/mnist_cnn.yaml", overrides + ["seed=1"]), runs_dir=tmp_path, data_dir=tiny_data).metrics
    keys = ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


@pytest.mark.parametrize("config, overrides, article", [
    ("mnist_cnn", [], "(article: 96.0%)"),
    ("mnist_cnn", ["transform.permute=true"], "(article: 80.0%)"),  # study A's permuted CNN, not its 96%
    ("mnist_fc", ["transform.permute=true"], "(article: 85.0%)"),
    ("lenet", ["transform.permute=true"], None),  # the article gives no number for permuted pixels
])
def test_train_and_show_give_the_articles_number_for_the_runs_condition(tiny_data, tmp_path, config, overrides, article):
    trained = cnnlab("train", f"configs/{config}.yaml", "train.epochs=1", "train.max_steps=1", *overrides,
                     "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert trained.returncode == 0, trained.stderr
    result_line = trained.stdout.strip().splitlines()[-2]
    shown = cnnlab("show", trained.stdout.strip().splitlines()[-1])
    accuracy_row = next(line for line in shown.stdout.splitlines() if "test accuracy" in line)
    for line in (result_line, accuracy_row):
        assert (article in line) if article else ("article" not in line), line


def test_summary_command_shows_layers_and_rule(tmp_path):
    out = cnnlab("summary", "configs/mnist_cnn.yaml")
    assert out.returncode == 0, out.stderr
    assert "Conv2d" in out.stdout and "6x24x24" in out.stdout and "6,422" in out.stdout
    assert "floor((28 + 2*0 - 5) / 1) + 1 = 24" in out.stdout


def test_optimizer_takes_every_setting_of_the_config():
    cfg = load_config(ROOT / "configs/cifar10_trashnet_fixed.yaml")
    sgd = build_optimizer(cfg, build_model(cfg.model, (3, 32, 32), 10))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 5e-4)

    cfg = load_config(ROOT / "configs/cifar10_keras_cnn.yaml", ["optimizer.momentum=0.5", "optimizer.weight_decay=0.01"])
    rmsprop = build_optimizer(cfg, build_model(cfg.model, (3, 32, 32), 10))
    assert isinstance(rmsprop, torch.optim.RMSprop)
    group = rmsprop.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"], group["weight_decay"]) == (1e-4, 0.9, 1e-7, 0.5, 0.01)


@pytest.fixture(scope="module")
def subset_run(tiny_data, tmp_path_factory):
    """One epoch on the first 50 training and 30 test images, evaluated in batches of 16 (30 = 16 + 14)."""
    overrides = ["device=cpu", "train.epochs=1", "train.threads=1", "dataset.train_subset=50", "dataset.test_subset=30", "train.eval_batch_size=16"]
    cfg = load_config(ROOT / "configs/mnist_cnn.yaml", overrides)
    return cfg, run(cfg, runs_dir=tmp_path_factory.mktemp("runs"), data_dir=tiny_data)


def test_dataset_subsets_limit_both_splits(subset_run, tiny_data):
    cfg, result = subset_run
    assert result.summary["train_size"] == 50 and result.summary["test_size"] == 30
    data, _, _ = prepare_data(cfg, torch.device("cpu"), tiny_data)
    assert (len(data.x_train), len(data.y_train), len(data.x_test), len(data.y_test)) == (50, 50, 30, 30)


def test_a_subset_larger_than_the_split_is_refused_before_the_run_directory(tiny_data, tmp_path):
    out = cnnlab("train", "configs/mnist_fc.yaml", "dataset.train_subset=100000", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: dataset.train_subset=100000 is more than the 300 images of the mnist training split; ask for 300 or fewer, or leave it out to use them all"
    ]
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # no run claims the subset


def test_a_run_an_earlier_cnnlab_trained_with_a_subset_larger_than_the_split_resumes(tmp_path):
    """An earlier cnnlab cut such a subset to the split (make smoke gave the toy's 2 examples 500): its
    stored config is not refused now, or the run could no longer be resumed."""
    first = run(load_config(ROOT / "configs/toy_4x4.yaml", ["device=cpu", "train.epochs=1", "train.checkpoint=true"]), runs_dir=tmp_path)
    stored = (first.path / "config.yaml").read_text()
    (first.path / "config.yaml").write_text(stored.replace("train_subset: null", "train_subset: 500").replace("test_subset: null", "test_subset: 200"))
    out = cnnlab("train", "--resume", first.path, "train.epochs=2")
    assert out.returncode == 0, out.stderr
    assert list(pd.read_csv(first.path / "metrics.csv")["epoch"]) == [1, 2]


def test_test_loss_and_accuracy_are_over_the_whole_test_split(subset_run, tiny_data):
    cfg, result = subset_run
    data, _, _ = prepare_data(cfg, torch.device("cpu"), tiny_data)
    model = build_model(cfg.model, (1, 28, 28), 10)
    model.load_state_dict(torch.load(result.path / "model.pt", weights_only=True))
    with torch.no_grad():
        out = model.eval()(data.x_test)
    assert result.summary["test_loss"] == pytest.approx(F.cross_entropy(out, data.y_test).item(), rel=1e-5)
    assert result.summary["test_acc"] == (out.argmax(1) == data.y_test).sum().item() / 30


@pytest.mark.parametrize("change,tolerance", [("train.channels_last=false", 1e-4), ("train.amp=bf16", 5e-2)], ids=["nchw", "bf16"])
def test_memory_layout_and_bf16_train_the_same_model(tiny_data, tmp_path, change, tolerance):
    """Channels-last (the default) against NCHW: the same numbers up to float rounding; bf16 autocast
    on the CPU: the same training to bf16's precision."""
    base = ["device=cpu", "train.epochs=2", "train.threads=1", "dataset.train_subset=128", "dataset.test_subset=64", "train.batch_size=32"]
    plain, changed = (
        pd.read_csv(run(load_config(ROOT / "configs/mnist_cnn.yaml", base + extra), runs_dir=tmp_path / str(i), data_dir=tiny_data).path / "metrics.csv")
        for i, extra in enumerate([[], [change]])
    )
    for column in ("train_loss", "test_loss"):
        assert changed[column].tolist() == pytest.approx(plain[column].tolist(), rel=tolerance)
    if change == "train.amp=bf16":  # and autocast did change the arithmetic
        assert changed["train_loss"].tolist() != plain["train_loss"].tolist()


@pytest.mark.parametrize("channels_last", [True, False])
def test_train_channels_last_decides_the_layout_of_the_data_and_the_weights(tiny_data, channels_last):
    """The test above shows the two layouts train alike; this one that the flag does pick the layout
    (CIFAR-10: 3 channels, so the two layouts differ in memory)."""
    from cnnlab.experiment import setup

    cfg = load_config(ROOT / "configs/mnist_cnn.yaml", ["device=cpu", "dataset.name=cifar10", f"train.channels_last={channels_last}"])
    data, _, state, _ = setup(cfg, torch.device("cpu"), tiny_data)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    convs = [m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=layout) for m in convs)
    assert data.x_train.is_contiguous(memory_format=layout) and data.x_test.is_contiguous(memory_format=layout)


# ---------------------------------------------------------------------------- real data
STUDY_THRESHOLDS = [
    ("mnist_cnn.yaml", 0.95),
    ("mnist_fc.yaml", 0.87),
    ("lenet_modern.yaml", 0.990),
    ("lenet.yaml", 0.983),
    ("mnist_fast.yaml", 0.990),  # 99% in one epoch of 59 steps
]


@pytest.mark.slow
@pytest.mark.parametrize("config,threshold", STUDY_THRESHOLDS, ids=[c for c, _ in STUDY_THRESHOLDS])
def test_study_accuracy_on_real_mnist(config, threshold, tmp_path):
    data = real_data("MNIST", "raw")
    result = run(load_config(ROOT / "configs" / config, ["device=cpu"]), runs_dir=tmp_path, data_dir=data)
    assert result.summary["status"] == "completed"
    assert result.summary["test_acc"] >= threshold, result.metrics


CROWDED = (
    "note: other work is using 1.5 of this machine's 2 cores; this run's 2 threads wait for each other at every "
    "layer, so train.threads=1 may train several times faster here (its numbers differ in the last digits)"
)


def crowd(monkeypatch, others: float | None) -> None:
    """A 2-core machine where other work used `others` cores' worth while a run set up."""
    from cnnlab import experiment
    from cnnlab.bench.machine import Stretch

    monkeypatch.setattr(experiment, "DEFAULT_THREADS", 2)
    monkeypatch.setattr(experiment.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(Stretch, "others", lambda self: others)
    monkeypatch.setattr(Stretch, "seconds", lambda self: 1.0)


@pytest.mark.parametrize("config, others, overrides, noted", [
    ("mnist_cnn", 1.5, [], True),  # 2 threads, half a core free
    ("mnist_cnn", 0.3, [], False),  # both cores nearly free
    ("mnist_cnn", None, [], False),  # unknown (no /proc/stat)
    ("mnist_cnn", 1.5, ["train.threads=2"], False),  # the user chose the threads
    ("mnist_fc", 1.5, [], False),  # a small step trains on one thread anyway
])
def test_a_run_crowded_by_other_work_is_told_about_train_threads(tiny_data, tmp_path, monkeypatch, config, others, overrides, noted):
    crowd(monkeypatch, others)
    notes = []
    cfg = load_config(ROOT / f"configs/{config}.yaml", ["device=cpu", *overrides])
    result = run(cfg, runs_dir=tmp_path, data_dir=tiny_data, on_note=notes.append)
    assert result.summary["status"] == "completed"
    assert notes == ([CROWDED] if noted else [])


def test_a_study_on_a_crowded_machine_says_so_once_not_once_a_cell(tiny_data, tmp_path, monkeypatch, capsys):
    """A study's cells trained in this process were never told (only cnnlab train was): a compare of
    12 CNN runs on a busy 2-core machine took 7 to 16 s a run instead of 1.6, without a word."""
    from cnnlab import report
    from cnnlab.cli import main
    from unittest import mock

    crowd(monkeypatch, 1.5)
    monkeypatch.setattr(report, "on_a_terminal", lambda: True)  # notes are for a person at a terminal
    argv = ["cnnlab", "compare", str(ROOT / "configs/mnist_cnn.yaml"), "--seeds", "2", "--data-dir", str(tiny_data),
            "--runs-dir", str(tmp_path), "device=cpu", "train.max_steps=1"]
    with mock.patch.object(sys, "argv", argv), pytest.raises(SystemExit) as end:
        main()
    err = capsys.readouterr().err
    assert end.value.code in (0, None) and err.count("note: other work is using") == 1 and CROWDED in err


def test_crowding_counts_the_cores_left_for_the_runs_threads():
    from cnnlab.experiment import crowding_note

    assert crowding_note(8, 8.4, 1.0, cores=16) is None  # 7.6 cores free for 8 threads: close enough
    assert "8 threads" in crowding_note(8, 8.6, 1.0, cores=16)
    assert crowding_note(1, 15.0, 1.0, cores=16) is None  # one thread waits for nobody
    assert crowding_note(2, 1.5, 0.1, cores=2) is None  # too short a stretch to tell


def test_notes_reach_a_terminal_only(capsys):
    from cnnlab.report import ConsoleProgress

    ConsoleProgress(1, "x", live=False).note("note: a hint")
    assert capsys.readouterr() == ("", "")
    ConsoleProgress(1, "x", live=True).note("note: a hint")
    assert capsys.readouterr() == ("", "note: a hint\n")


def git(where, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=where, check=True, capture_output=True)


def committed_checkout(where):
    """A git checkout in where holding one committed file, model.py."""
    git(where, "init", "-q")
    (where / "model.py").write_text("width = 1\n")
    git(where, "add", "model.py")
    git(where, "commit", "-qm", "first")


def git_commit(where):
    from cnnlab.provenance import git_state

    return git_state(where)["git_commit"]


def git_dirty(where):
    from cnnlab.provenance import git_state

    return git_state(where)["git_dirty"]


def test_a_run_records_whether_its_code_differs_from_the_commit(tmp_path):
    """git_commit alone would name code that did not run when the package has uncommitted changes."""
    assert git_commit(tmp_path) is None and git_dirty(tmp_path) is None  # not a git checkout

    committed_checkout(tmp_path)
    assert len(git_commit(tmp_path)) == 40 and git_dirty(tmp_path) is False
    (tmp_path / "model.py").write_text("width = 2\n")
    assert git_dirty(tmp_path) is True  # changed
    git(tmp_path, "checkout", "-q", "model.py")
    (tmp_path / "layers.py").write_text("")
    assert git_dirty(tmp_path) is True  # new, not ignored


def test_cnnlab_edited_since_the_process_imported_it_is_dirty(monkeypatch):
    """A study runs its cells in one process: a commit in the checkout during it had the later cells
    record the new commit, clean, though they ran the code imported before it."""
    import cnnlab
    from cnnlab.provenance import PACKAGE_DIR, git_state, tracked

    if not tracked(PACKAGE_DIR):
        pytest.skip("cnnlab is not in a git checkout here")
    clean = git_state()["git_dirty"]
    monkeypatch.setattr(cnnlab, "IMPORTED_SOURCE", "the source before a commit")
    assert git_state()["git_dirty"] is True
    monkeypatch.undo()
    assert git_state()["git_dirty"] is clean


def test_git_dirty_leaves_the_checkouts_index_alone(tmp_path):
    """git status rewrote the index of the checkout it looked at (a file's times had changed), taking
    its index.lock: a `git commit` there at that moment, while runs or Ray trials started, failed."""
    committed_checkout(tmp_path)
    os.utime(tmp_path / "model.py", (1_600_000_000, 1_600_000_000))  # same content, other times
    index = (tmp_path / ".git" / "index").read_bytes()
    assert git_dirty(tmp_path) is False
    assert (tmp_path / ".git" / "index").read_bytes() == index


def test_cnnlab_installed_in_another_projects_checkout_records_no_commit(tmp_path):
    """A virtual environment inside a project's checkout (ignored there): its commit was recorded as
    cnnlab's, clean, though it says nothing of the code that ran."""
    committed_checkout(tmp_path)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    git(tmp_path, "add", ".gitignore")
    git(tmp_path, "commit", "-qm", "ignore the environment")
    package = tmp_path / ".venv" / "site-packages" / "cnnlab"
    package.mkdir(parents=True)
    (package / "engine.py").write_text("")
    assert git_commit(package) is None and git_dirty(package) is None


def test_every_cuda_device_name_the_schema_takes_resolves_or_is_one_line(monkeypatch):
    """On a machine with CUDA, cuda:01 or an index past int32 (both pass the config's cuda:N) ended
    in torch.device's RuntimeError, a traceback."""
    from cnnlab.errors import ConfigError
    from cnnlab.experiment import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:01") == resolve_device("cuda:1") == torch.device("cuda", 1)
    for name in ("cuda:2", "cuda:99999999999999999999"):
        with pytest.raises(ConfigError, match=rf"^device '{name}' asked for, but only 2 CUDA device\(s\) exist$"):
            resolve_device(name)


def test_the_finished_line_tells_compile_seconds_and_the_cache_apart():
    """A resumed run whose first session compiled and whose second loaded the step from the cache said
    "(23.5 s of it compiling) (the compiled step taken from the cache)", two claims that read as one
    contradicting the other."""
    from cnnlab.cli import finished_line

    cfg = load_config(ROOT / "configs/mnist_cnn.yaml")
    base = {"params": 6422, "test_acc": 0.95, "epochs": 2, "train_seconds": 30.0, "device": "cpu"}
    line = lambda **s: finished_line(cfg, {**base, **s}, None)  # noqa: E731
    assert line().endswith("30.0 s training on cpu")
    assert line(compile_seconds=14.1, compiled_step_cached=False).endswith("(14.1 s of it compiling)")
    assert line(compile_seconds=0.004, compiled_step_cached=True).endswith("(the compiled step taken from the cache)")
    assert line(compile_seconds=23.5, compiled_step_cached=True).endswith("(23.5 s of it compiling; this session's step taken from the cache)")
    assert finished_line(cfg, base, "96.0%").endswith("on cpu (article: 96.0%)")
