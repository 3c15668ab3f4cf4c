"""matplotlib figures as PNGs: comparison bars, accuracy against shift, shift heatmaps, the
single-image class-probability heatmap and learning curves.

Figures are built with matplotlib.figure.Figure (the Agg canvas; no pyplot, no display, no global
state) and written atomically with save().
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.errors import counted
from cnnlab.runs import atomic_write

MODES = {"roll": "roll: wrap around", "zero": "zero: black fill"}


def plain(text) -> str:
    """text as drawn literally: a '$' in a label the user chose ('fc $^$') is a dollar sign, not the
    start of mathtext, which fails the whole figure when it does not parse."""
    return str(text).replace("$", r"\$")


def save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(Path(path), buf.getvalue())


def comparison_bars(table, title: str) -> Figure:
    """Mean test accuracy per model (groups) and condition (bars), with ±std error bars."""
    models = list(dict.fromkeys(table["model"]))
    conditions = list(dict.fromkeys(table["permuted"]))
    width = 0.8 / len(conditions)
    fig = Figure(figsize=(1.6 + 1.4 * len(models) * len(conditions), 4.2))
    ax = fig.add_subplot()
    for i, permuted in enumerate(conditions):
        rows = table[table["permuted"] == permuted].set_index("model").reindex(models)
        x = np.arange(len(models)) + (i - (len(conditions) - 1) / 2) * width
        mean = 100 * rows["test_acc_mean"].to_numpy()
        std = np.nan_to_num(100 * rows["test_acc_std"].to_numpy())
        spread = rows["test_acc_std"].notna().any()  # one seed: no error bar (not a zero-length one with caps)
        ax.bar(x, mean, width, yerr=std if spread else None, capsize=4, label="permuted pixels" if permuted else "ordered pixels",
               color="tab:orange" if permuted else "tab:blue")
        for xi, m, sd in zip(x, mean, std):
            if m == m:  # a model without this condition has no bar
                ax.text(xi, m + sd + 1.5, f"{m:.1f}", ha="center", va="bottom", fontsize=9)
    seeds = int(table["seeds"].max())
    ax.set(xticks=np.arange(len(models)), xticklabels=[plain(m) for m in models], ylim=(0, 115), xlabel="model", ylabel="test accuracy (%)",
           title=f"{plain(title)}\n" + (f"mean ± std over {counted(seeds, 'seed')}" if seeds > 1 else "1 seed, no spread"))
    if len(conditions) > 1:  # one condition (ordered pixels only): nothing for a legend to tell apart
        ax.legend(loc="upper center", ncols=len(conditions), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_vs_shift(df, axis: str, mode: str, title: str) -> Figure:
    """One line per model: test accuracy against the shift along x or y."""
    key = "dx" if axis == "x" else "dy"
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for model, rows in df.groupby("model", sort=False):
        rows = rows.sort_values(key)
        ax.plot(rows[key], 100 * rows["test_acc"], marker="o", label=plain(model))
    direction = "right" if axis == "x" else "down"
    ax.set(xlabel=f"shift along {axis} (pixels, + = {direction}; {MODES[mode]})", ylabel="test accuracy (%)", title=plain(title), ylim=(0, 100))
    ax.set_xticks(sorted(df[key].unique()))
    ax.axvline(0, color="gray", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def shift_heatmaps(df, mode: str, title: str) -> Figure:
    """One panel per model: test accuracy over the (dx, dy) grid."""
    models = list(dict.fromkeys(df["model"]))
    fig = Figure(figsize=(4.6 * len(models) + 1, 4.6), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        grid = df[df["model"] == model].pivot(index="dy", columns="dx", values="test_acc") * 100
        im = ax.imshow(grid.to_numpy(), vmin=0, vmax=100, cmap="viridis", origin="upper",
                       extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, grid.index.max() + 0.5, grid.index.min() - 0.5))
        for (dy, dx), value in grid.stack().items():
            ax.text(dx, dy, f"{value:.0f}", ha="center", va="center", fontsize=7, color="black" if value > 60 else "white")
        ax.set(title=plain(model), xlabel="dx (pixels, + = right)")
    axes[0].set_ylabel("dy (pixels, + = down)")
    fig.colorbar(im, ax=list(axes), label="test accuracy (%)")
    fig.suptitle(f"{plain(title)} ({MODES[mode]})")
    return fig


def probability_heatmap(probs: np.ndarray, shifts: list[int], classes: list[str], title: str) -> Figure:
    """Rows: shift in pixels; columns: class names; each cell annotated with its probability."""
    fig = Figure(figsize=(1.0 + 0.85 * len(classes), 0.9 + 0.42 * len(shifts)))
    ax = fig.add_subplot()
    im = ax.imshow(probs, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            ax.text(j, i, f"{probs[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if probs[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(classes)), [plain(c) for c in classes], rotation=35, ha="right")
    ax.set_yticks(range(len(shifts)), [str(s) for s in shifts])
    ax.set(ylabel="shift (pixels)", xlabel="class", title=plain(title))
    fig.colorbar(im, ax=ax, label="class probability")
    return fig


LOSSES = {"cross_entropy": "cross-entropy", "bce": "binary cross-entropy"}


def learning_curves(metrics, title: str, loss: str = "cross_entropy", label_smoothing: float = 0.0) -> Figure:
    """Loss and accuracy per epoch, train and test, side by side; loss and label_smoothing are the
    config's (the losses were measured against the smoothed targets, so the axis says so)."""
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("test", "--s")):
        label = "train (mean over the epoch)" if split == "train" else "test (after the epoch)"
        loss_ax.plot(metrics["epoch"], metrics[f"{split}_loss"], style, label=label)
        acc_ax.plot(metrics["epoch"], 100 * metrics[f"{split}_acc"], style, label=label)
    smoothing = f", label smoothing {label_smoothing:g}" if label_smoothing else ""
    loss_ax.set(xlabel="epoch", ylabel=f"loss ({LOSSES.get(loss, loss)}{smoothing})", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: a tick at 1, not fractions around it
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(plain(title))
    return fig
