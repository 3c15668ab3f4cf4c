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

from cnnlab.config import load_config
from cnnlab.experiment import run
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
    for key in ("test_loss", "train_seconds", "device", "seed", "torch_version", "cnnlab_version", "git_commit"):
        assert key in summary

    cfg = load_config(run_dir / "config.yaml")  # the resolved config is itself a valid config
    assert cfg.train.epochs == 2 and cfg.device == "cpu"
    model = build_model(cfg.model, (1, 28, 28), 10)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    assert "epoch 1/2" in out.stdout and "epoch 2/2" in out.stdout


def test_print_config_resolves_overrides(tmp_path):
    out = cnnlab("train", "configs/mnist_fc.yaml", "model.hidden=[100]", "optimizer.lr=1e-3", "--print-config")
    assert out.returncode == 0, out.stderr
    assert "hidden:\n  - 100" in out.stdout or "hidden: [100]" in out.stdout
    assert "lr: 0.001" in out.stdout


def test_same_seed_gives_the_same_numbers(tiny_data, tmp_path):
    overrides = ["device=cpu", "train.epochs=2", "transform.augment.hflip=true", "transform.augment.translate=2"]
    cfg = load_config(ROOT / "configs/mnist_cnn.yaml", overrides)
    a = run(cfg, runs_dir=tmp_path, data_dir=tiny_data).metrics
    b = run(cfg, runs_dir=tmp_path, data_dir=tiny_data).metrics
    c = run(load_config(ROOT / "configs/mnist_cnn.yaml", overrides + ["seed=1"]), runs_dir=tmp_path, data_dir=tiny_data).metrics
    keys = ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


def test_summary_command_shows_layers_and_rule(tmp_path):
    out = cnnlab("summary", "configs/mnist_cnn.yaml")
    assert out.returncode == 0, out.stderr
    assert "Conv2d" in out.stdout and "6x24x24" in out.stdout and "6,422" in out.stdout
    assert "floor((28 + 2*0 - 5) / 1) + 1 = 24" in out.stdout


# ---------------------------------------------------------------------------- real data
STUDY_THRESHOLDS = [
    ("mnist_cnn.yaml", 0.95),
    ("mnist_fc.yaml", 0.87),
    ("lenet_modern.yaml", 0.990),
    ("lenet.yaml", 0.983),
]


@pytest.mark.slow
@pytest.mark.parametrize("config,threshold", STUDY_THRESHOLDS, ids=[c for c, _ in STUDY_THRESHOLDS])
def test_study_accuracy_on_real_mnist(config, threshold, tmp_path):
    data = real_data("MNIST", "raw")
    result = run(load_config(ROOT / "configs" / config, ["device=cpu"]), runs_dir=tmp_path, data_dir=data)
    assert result.summary["status"] == "completed"
    assert result.summary["test_acc"] >= threshold, result.metrics
