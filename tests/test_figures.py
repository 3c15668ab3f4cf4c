"""The figures: what each draws (bars, error bars, lines, annotations, labels) and that save()
writes a real PNG atomically."""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from cnnlab import figures
from cnnlab.studies.shift_sweep import offsets


def labels(ax) -> tuple[str, str, str]:
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel()


def test_save_writes_a_png(tmp_path):
    fig = figures.learning_curves(pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_loss": [0.9], "train_acc": [0.5], "test_acc": [0.6]}), "one epoch")
    path = tmp_path / "curves.png"
    figures.save(fig, path)
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert list(tmp_path.iterdir()) == [path]  # no temp file left


def test_save_renames_a_temp_file_into_place(tmp_path, monkeypatch):
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append((Path(src), Path(dst))) or real(src, dst))
    path = tmp_path / "curves.png"
    figures.save(figures.learning_curves(pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_loss": [0.9], "train_acc": [0.5], "test_acc": [0.6]}), "x"), path)
    ((src, dst),) = replaced
    assert dst == path and src.parent == tmp_path and re.fullmatch(r"\.curves\.png\..+\.tmp", src.name)
    assert not src.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_bars_heights_and_error_bars():
    table = pd.DataFrame({
        "model": ["FC", "FC", "CNN", "CNN"], "permuted": [False, True, False, True], "seeds": [3] * 4,
        "test_acc_mean": [0.88, 0.87, 0.95, 0.81], "test_acc_std": [0.01, 0.02, 0.005, 0.03],
    })
    ax = figures.comparison_bars(table, "fc-vs-cnn").axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [81.0, 87.0, 88.0, 95.0]
    caps = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert len(caps) == 2  # one error-bar set per condition
    assert "fc-vs-cnn" in ax.get_title() and "3 seeds" in ax.get_title() and ax.get_ylabel() == "test accuracy (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["FC", "CNN"]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"ordered pixels", "permuted pixels"}
    assert {t.get_text() for t in ax.texts} == {"88.0", "87.0", "95.0", "81.0"}


def test_comparison_bars_without_the_permuted_condition_has_no_legend():
    table = pd.DataFrame({"model": ["FC", "CNN"], "permuted": [False, False], "seeds": [1, 1],
                          "test_acc_mean": [0.88, 0.95], "test_acc_std": [np.nan, np.nan]})
    ax = figures.comparison_bars(table, "ordered only").axes[0]
    assert sorted(round(p.get_height(), 6) for p in ax.patches) == [88.0, 95.0]
    assert ax.get_legend() is None


def test_learning_curves_name_the_loss():
    metrics = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.5], "test_loss": [0.6, 0.4], "train_acc": [0.5, 1.0], "test_acc": [0.5, 1.0]})
    assert figures.learning_curves(metrics, "toy", loss="bce").axes[0].get_ylabel() == "loss (binary cross-entropy)"
    assert figures.learning_curves(metrics, "lenet").axes[0].get_ylabel() == "loss (cross-entropy)"


def test_learning_curves_say_the_losses_are_against_smoothed_targets():
    """With label smoothing the losses are the smoothed cross-entropy (0.2 over 10 classes: never below
    about 0.5), which the axis called plain cross-entropy."""
    metrics = pd.DataFrame({"epoch": [1], "train_loss": [0.9], "test_loss": [0.8], "train_acc": [0.9], "test_acc": [0.9]})
    label = figures.learning_curves(metrics, "mnist_fast", label_smoothing=0.2).axes[0].get_ylabel()
    assert label == "loss (cross-entropy, label smoothing 0.2)"


def test_accuracy_vs_shift_one_line_per_model():
    rows = [{"model": m, "dx": dx, "dy": 0, "test_acc": 0.9 - 0.1 * abs(dx) * k} for k, m in enumerate(["FC", "CNN"], 1) for dx in range(-2, 3)]
    ax = figures.accuracy_vs_shift(pd.DataFrame(rows), "x", "roll", "sweep").axes[0]
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["FC", "CNN"]
    fc = ax.get_lines()[0]
    assert list(fc.get_xdata()) == [-2, -1, 0, 1, 2] and np.allclose(fc.get_ydata(), [70, 80, 90, 80, 70])
    title, xlabel, ylabel = labels(ax)
    assert title == "sweep" and "pixels" in xlabel and "roll" in xlabel and ylabel == "test accuracy (%)"


def test_shift_heatmaps_one_panel_per_model():
    rows = [{"model": m, "dx": dx, "dy": dy, "test_acc": 0.5 + 0.1 * dx} for m in ("FC", "CNN") for dx, dy in offsets(1, "both")]
    fig = figures.shift_heatmaps(pd.DataFrame(rows), "zero", "grid")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["FC", "CNN"]
    grid = panels[0].images[0].get_array()
    assert grid.shape == (3, 3) and np.allclose(grid[0], [40, 50, 60])  # columns are dx
    assert any("test accuracy" in ax.get_ylabel() for ax in fig.axes if not ax.images)  # the colour bar


def test_probability_heatmap_is_annotated_with_class_names():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=3)
    ax = figures.probability_heatmap(probs, [-1, 0, 1], ["a", "b", "c", "d"], "one image").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["-1", "0", "1"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{p:.2f}" for p in probs.ravel())
    assert labels(ax) == ("one image", "class", "shift (pixels)")


def test_learning_curves_train_and_test():
    metrics = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4], "test_loss": [0.8, 0.5, 0.45],
                            "train_acc": [0.6, 0.8, 0.9], "test_acc": [0.7, 0.82, 0.85]})
    loss_ax, acc_ax = figures.learning_curves(metrics, "run").axes
    assert len(loss_ax.get_lines()) == 2 and len(acc_ax.get_lines()) == 2
    assert np.allclose(acc_ax.get_lines()[1].get_ydata(), [70, 82, 85])
    assert "loss" in loss_ax.get_ylabel() and acc_ax.get_ylabel() == "accuracy (%)" and loss_ax.get_xlabel() == "epoch"


@pytest.mark.parametrize("epochs", [1, 2, 5])
def test_learning_curves_mark_whole_epochs_only(epochs):
    """A one-epoch run's axis read 0.945, 0.960, ... 1.050: no tick at epoch 1, where its points are."""
    n = range(1, epochs + 1)
    metrics = pd.DataFrame({"epoch": n, "train_loss": [1.0] * epochs, "test_loss": [0.9] * epochs, "train_acc": [0.5] * epochs, "test_acc": [0.6] * epochs})
    for ax in figures.learning_curves(metrics, "run").axes:
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == list(n)


def test_a_dollar_sign_in_a_label_is_drawn_as_it_is(tmp_path):
    """Labels, titles and class names come from the user (a study file's labels, a CIFAR copy's
    batches.meta): 'fc $^$' is text, not mathtext that does not parse and fails the figure."""
    label = "fc $^$"
    table = pd.DataFrame({"model": [label], "permuted": [False], "seeds": [1], "test_acc_mean": [0.9], "test_acc_std": [np.nan]})
    shifted = pd.DataFrame([{"model": label, "dx": dx, "dy": dy, "test_acc": 0.5} for dx, dy in offsets(1, "both")])
    metrics = pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_loss": [0.9], "train_acc": [0.5], "test_acc": [0.6]})
    for fig in (
        figures.comparison_bars(table, label), figures.accuracy_vs_shift(shifted[shifted.dy == 0], "x", "roll", label),
        figures.shift_heatmaps(shifted, "roll", label), figures.probability_heatmap(np.full((1, 2), 0.5), [0], [label, "b"], label),  # a CIFAR copy names its classes
        figures.learning_curves(metrics, label),
    ):
        figures.save(fig, tmp_path / "figure.png")
        assert imread(tmp_path / "figure.png").ndim == 3
