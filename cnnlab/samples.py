"""A PNG grid of dataset images with their class names, optionally after a config's transforms.

The deterministic transforms a model sees (the fixed shift, the pixel permutation) are applied as
the run applies them, so a reader sees the permutation scramble a digit or a shift move it.
Normalization is left out: it changes no image's look, only its numbers.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import torch

from cnnlab.config import Config
from cnnlab.data import DATASETS, load_splits
from cnnlab.transforms import Pipeline

COLUMNS = 8  # images per row
DEFAULT_N = 32  # images in a grid unless --n says otherwise
MIN_COLUMNS = 4  # the figure is at least this many cells wide, so the title fits
CELL_INCHES = (1.3, 1.5)  # width, height of one image with its class name below
TITLE_INCHES = 0.6  # room for the title above the grid
DPI = 100


def grid_size(n: int, columns: int = COLUMNS) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for n images."""
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    return round(max(cols, MIN_COLUMNS) * CELL_INCHES[0] * DPI), round((rows * CELL_INCHES[1] + TITLE_INCHES) * DPI)


def transforms_shown(cfg: Config) -> list[str]:
    """Plain words for the deterministic transforms applied to the images, in order."""
    t = cfg.transform
    done = []
    if t.shift.dx or t.shift.dy:
        done.append(f"shift dx={t.shift.dx} dy={t.shift.dy} ({t.shift.mode})")
    if t.permute:
        done.append(f"pixel permutation (seed {t.permutation_seed(cfg.seed)})")
    return done


def sample_images(cfg: Config, n: int, split: str = "test", data_dir=None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first n images of a split as the config's deterministic transforms leave them (no
    normalization), float on the 0..1 scale (the toy: its own scale), with labels and class names.
    A subset larger than the split is not refused (nothing trains here): the grid is the split's first n."""
    train, test = load_splits(cfg, data_dir, stored=True)
    source = train if split == "train" else test
    shown = cfg.transform.model_copy(update={"normalize": "none"})
    pipeline = Pipeline.for_split(shown, source, cfg.seed)
    # the training split's permutation is only deferred when augmenting, and it is the same one
    images = pipeline.prepare(source.images[:n], train=False)
    return images, source.labels[:n], source.classes


def grid_png(images: torch.Tensor, labels: torch.Tensor, classes: list[str], title: str, columns: int = COLUMNS) -> bytes:
    """The grid as PNG bytes: one image per cell, its class name below it."""
    from matplotlib.figure import Figure  # as cnnlab.figures: the Agg canvas, no pyplot, no global backend switch

    from cnnlab.figures import plain

    n = len(images)
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    width, height = grid_size(n, columns)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    side = (1 - min(cols, MIN_COLUMNS) / max(cols, MIN_COLUMNS)) / 2 if cols < MIN_COLUMNS else 0.0
    top = 1 - TITLE_INCHES * DPI / height
    grid = fig.add_gridspec(rows, cols, left=side + 0.02, right=1 - side - 0.02, bottom=0.02, top=top, hspace=0.3, wspace=0.1)
    wrapped = textwrap.fill(title, width=int(width / DPI * 12))  # about 12 characters per inch at 10 pt
    fig.suptitle(wrapped, fontsize=10, y=1 - 8 / height, va="top")
    x = images.detach().cpu().float()
    # one scale for every image, so gray levels compare across the grid (0..1, wider for the toy)
    low, high = min(0.0, float(x.min())), max(1.0, float(x.max()))
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        img = x[i]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        else:
            ax.imshow(((img - low) / (high - low)).permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(plain(classes[int(labels[i])]), fontsize=8, labelpad=2)  # a CIFAR copy names its own classes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def title_for(cfg: Config, n: int, split: str) -> str:
    done = transforms_shown(cfg)
    after = "after " + ", ".join(done) if done else "as stored, no transform"
    return f"{DATASETS[cfg.dataset.name].title}: the first {n} {split} images, {after}"


def default_out(root: Path, cfg: Config, split: str, n: int, from_config: bool) -> Path:
    """runs/samples-DATASET-SPLIT[-CONFIG][-shift_dxX_dyY_MODE][-permute_seedS][-nN].png, named after
    what is drawn, however it was asked for (a config file, a named config, overrides): other images
    get their own file, whatever the configs drawing them are called, and the same images the same
    one. The split is always named: were it left out for one, a config called "train" would collide."""
    parts = ["samples", cfg.dataset.name, split] + ([cfg.name] if from_config else [])
    t = cfg.transform
    if t.shift.dx or t.shift.dy:
        parts.append(f"shift_dx{t.shift.dx}_dy{t.shift.dy}_{t.shift.mode}")
    if t.permute:
        parts.append(f"permute_seed{t.permutation_seed(cfg.seed)}")
    if n != DEFAULT_N:
        parts.append(f"n{n}")
    return root / ("-".join(parts) + ".png")
