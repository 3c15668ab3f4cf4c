"""`cnnlab shift-sweep`: test accuracy of trained models on shifted copies of the test set, and one
image's class probabilities at every shift (study B, generalised).

The shift is the transforms module's: a Pipeline whose transform.shift is the sweep's offset
prepares the test images exactly as training prepared them (float 0..1, shift with black fill,
normalization, permutation), so shifting always happens before normalization; engine.evaluate()
measures. Offsets add to a run's own transform.shift, so at (0, 0) this is the run's own final
evaluation (for a run trained with a shift, when the sweep uses the run's shift mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab import runs
from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES, Config, ShiftConfig, load_config
from cnnlab.data import Split
from cnnlab.engine import autocast, class_probabilities, evaluate, loss_function, predict
from cnnlab.errors import ConfigError
from cnnlab.experiment import resolve_device
from cnnlab.models import build_model
from cnnlab.transforms import Pipeline

READING_SHIFT = 4  # the reading sentence compares the centre with shifts of this many pixels


@dataclass
class Trained:
    """A trained model ready to evaluate, with the config it was trained with."""

    label: str
    cfg: Config
    model: torch.nn.Module
    run_dir: Path
    device: torch.device


def load_trained(run_dir, label: str | None = None, device: str | None = None) -> Trained:
    """Rebuild a run's model from its config.yaml and model.pt (weights only), once it has finished
    (completed, or stopped by a sweep's scheduler): an interrupted, failed or still running run holds
    an earlier epoch's weights than its config says."""
    path = runs.finished_run(run_dir, "sweep")
    cfg = load_config(path / runs.CONFIG, [f"device={device}"] if device else None, stored=True)
    dev = resolve_device(cfg.device)
    model = build_model(cfg.model, DATASET_SHAPES[cfg.dataset.name], DATASET_CLASSES[cfg.dataset.name])
    model = runs.load_model_weights(model, path, dev).to(dev)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Trained(label or cfg.name, cfg, model.train(not cfg.train.eval_mode), path, dev)


def offsets(max_shift: int, axis: str) -> list[tuple[int, int]]:
    """(dx, dy) pairs: along x, along y, or the whole grid (dy-major)."""
    r = range(-max_shift, max_shift + 1)
    if axis == "x":
        return [(s, 0) for s in r]
    if axis == "y":
        return [(0, s) for s in r]
    return [(dx, dy) for dy in r for dx in r]


def prepare_shifted(t: Trained, train: Split, images: torch.Tensor, dx: int, dy: int, mode: str) -> torch.Tensor:
    """uint8 images -> the model's inputs, as the run prepared its test set but shifted (dx, dy) further:
    the sweep's offsets add to the run's own transform.shift, so 0 is what the run was tested on."""
    own = t.cfg.transform.shift
    transform = t.cfg.transform.model_copy(update={"shift": ShiftConfig(dx=own.dx + dx, dy=own.dy + dy, mode=mode)})
    pipeline = Pipeline.for_split(transform, train, t.cfg.seed)
    memory = torch.channels_last if t.cfg.train.channels_last else torch.contiguous_format
    return pipeline.prepare(images.to(t.device), train=False).contiguous(memory_format=memory)


def test_images(t: Trained, test: Split) -> int:
    """How many of the test split's images a run is tested on (its dataset.test_subset, else all)."""
    return len(test.labels[: t.cfg.dataset.test_subset])


def sweep(t: Trained, splits: tuple[Split, Split], shifts: list[tuple[int, int]], mode: str) -> list[dict]:
    """Test loss and accuracy at every (dx, dy), on the run's own test split (its test_subset too);
    splits: the run's (train, test), as load_splits(t.cfg, data_dir) gives them."""
    train, test = splits
    n = test_images(t, test)
    images, labels = test.images[:n], test.labels[:n].to(t.device)
    loss_fn = loss_function(t.cfg.loss.name, t.cfg.loss.label_smoothing)
    rows = []
    for dx, dy in shifts:
        x = prepare_shifted(t, train, images, dx, dy, mode)
        loss, acc = evaluate(t.model, x, labels, t.cfg.train.eval_batch_size, loss_fn, t.cfg.train.amp, t.cfg.train.tta, t.cfg.train.eval_mode)
        rows.append({"model": t.label, "dx": dx, "dy": dy, "mode": mode, "test_acc": acc, "test_loss": loss})
    return rows


def pick_image(splits: tuple[Split, Split], index: int, split: str) -> tuple[torch.Tensor, int, list[str]]:
    """One uint8 image (1, C, H, W) of a dataset's (train, test) splits (the full split named by
    split), its label and the class names."""
    train, test = splits
    source = train if split == "train" else test
    if not 0 <= index < len(source.labels):
        raise ConfigError(f"--image-index {index} is out of range: the {split} split has {len(source.labels)} images")
    return source.images[index : index + 1], int(source.labels[index]), list(train.classes)


@torch.inference_mode()
def image_probabilities(t: Trained, train: Split, image: torch.Tensor, shifts: list[tuple[int, int]], mode: str) -> np.ndarray:
    """Probability of every class (columns) at every shift (rows) for one image; train: the run's
    training split, whose statistics prepare the image. The outputs are the run's predictions, as
    evaluate() makes them (its train.amp and train.tta)."""
    x = torch.cat([prepare_shifted(t, train, image, dx, dy, mode) for dx, dy in shifts])
    with autocast(t.device, t.cfg.train.amp):
        out = predict(t.model, x, t.cfg.train.tta)
    return class_probabilities(out).cpu().numpy()


def accuracy_table(rows: list[dict], axis: str) -> list[dict]:
    """Shift x model, accuracies as percentages (1-D sweeps); the grid per model is in the CSV."""
    import pandas as pd

    df = pd.DataFrame(rows)
    key = "dx" if axis == "x" else "dy"
    wide = df.pivot_table(index=key, columns="model", values="test_acc", sort=False)
    return [{f"{key} (px)": int(s), **{m: f"{100 * wide.loc[s, m]:.2f}%" for m in wide.columns}} for s in sorted(wide.index)]


def grid_table(rows: list[dict], model: str) -> list[dict]:
    """One model's 2-D sweep as rows dy, columns dx."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["model"] == model])
    grid = df.pivot(index="dy", columns="dx", values="test_acc")
    return [{"dy \\ dx": int(dy), **{str(dx): f"{100 * grid.loc[dy, dx]:.1f}" for dx in grid.columns}} for dy in grid.index]


# how the models whose accuracy changed least (or rose most) fare, by the change's sign: (one, several)
FARES = {-1: ("loses the least", "lose the least"), 1: ("gains the most", "gain the most"), 0: ("keeps its accuracy best", "keep their accuracy best")}


def sampling_noise(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """Twice the standard error, from the test set's sampling alone, of the difference between two
    models' changes (centred, shifted, test images): each accuracy measured on n images varies by
    p(1 - p)/n, the four taken as independent. That overstates it somewhat (a model's centred and
    shifted accuracies come from the same images); training seeds add more, which one run each
    cannot show."""
    return 2 * math.sqrt(sum(p * (1 - p) / n for centred, shifted, n in (a, b) for p in (centred, shifted)))


def reading(rows: list[dict], axis: str, mode: str, images: dict[str, int] | None = None) -> str:
    """Centred accuracy against the mean at +-s pixels (s = 4, or the largest shift swept), per model.
    With each model's number of test images, changes within the test set's sampling noise of the
    best one (see sampling_noise) fare alike with it."""
    import pandas as pd

    df = pd.DataFrame(rows)
    s = min(READING_SHIFT, int(df[["dx", "dy"]].abs().to_numpy().max()))
    if s == 0:
        best = df.sort_values("test_acc", ascending=False).iloc[0]
        return f"Only the centred images were evaluated; {best.model} is best at {best.test_acc:.1%}."
    away = {"x": [(s, 0), (-s, 0)], "y": [(0, s), (0, -s)], "both": [(s, 0), (-s, 0), (0, s), (0, -s)]}[axis]
    parts, change, measured = [], {}, {}  # change: shifted minus centred accuracy
    for model, g in df.groupby("model", sort=False):
        acc = {(r.dx, r.dy): r.test_acc for r in g.itertuples()}
        centred, shifted = acc[0, 0], float(np.mean([acc[o] for o in away]))
        change[model] = shifted - centred
        if images:
            measured[model] = (centred, shifted, images[model])
        points = round(100 * change[model], 1) + 0.0  # + 0.0: -0.0 (a change lost in rounding) shown as +0.0
        parts.append(f"{model} from {centred:.1%} to {shifted:.1%} ({points:+.1f} points)")
    where = {"x": "along x (mean of both directions", "y": "along y (mean of both directions", "both": "along x or y (mean of the four directions"}[axis]
    text = f"Shifted by {s} px {where}, {mode}), " + ", ".join(parts)
    if len(change) == 1:
        return text + "."
    shown = {m: round(100 * c, 1) for m, c in change.items()}  # as the parts show it
    points = max(shown.values())
    best = next(m for m in shown if shown[m] == points)
    margins = {m: sampling_noise(measured[best], measured[m]) for m in shown} if measured else {}
    leaders = [m for m in shown if shown[m] == points or (measured and change[best] - change[m] <= margins[m])]
    # the widest margin among the leaders, as the sentence shows it (none where they are level as rounded)
    noise = max((margins[m] for m in leaders if shown[m] != points), default=None)
    within = "" if noise is None else f" (within the test set's sampling noise: ±{100 * noise:.1f})"
    if len(leaders) == len(shown):
        return text + f"; {' and '.join(leaders)} fare alike at {s} px{within}."
    signs = {(shown[m] > 0) - (shown[m] < 0) for m in leaders}
    sign = signs.pop() if len(signs) == 1 else 0  # leaders that gained and lost alike: neither 'gain' nor 'lose'
    fares = FARES[sign][len(leaders) > 1]
    return text + f"; {' and '.join(leaders)} {fares} at {s} px{within}."


def _ranges(values: list[int]) -> str:
    """[-5, -4, -3, 1, 4, 5] -> '-5..-3, 1, 4..5'."""
    runs_: list[list[int]] = []
    for v in values:
        if runs_ and v == runs_[-1][-1] + 1:
            runs_[-1].append(v)
        else:
            runs_.append([v])
    return ", ".join(f"{r[0]}..{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs_)


def image_reading(model: str, probs: np.ndarray, steps: list[int], label: int, classes: list[str]) -> str:
    """What the model makes of the single image: its probability at 0 px and where it is right."""
    right = [s for s, p in zip(steps, probs) if p.argmax() == label]
    centre = probs[steps.index(0)]
    text = f"{model}: {classes[label]} has probability {centre[label]:.2f} at 0 px"
    if centre.argmax() != label:
        text += f" (the model says {classes[centre.argmax()]}, {centre.max():.2f})"
    where = f"at {_ranges(right)} px" if right else "at none of the shifts"
    return text + f"; predicted {classes[label]} {where} ({len(right)} of {len(steps)} shifts)."
