"""The articles' teaching tools as commands: `cnnlab forward-check` (the forward pass redone by hand
in NumPy, layer by layer) and `cnnlab samples` (a PNG grid of images with their class names)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli import CnnlabUsage, DataDir, RunsDir, app, load, not_empty, split_args, split_name
from cnnlab.errors import CnnlabError, ConfigError


def _checked_config(args: list[str], run: Optional[Path], data_dir: Optional[Path]):
    """The config to check: the run's own (its weights fit only its model), else CONFIG's; and the
    data directory to read (a run's: the one it trained on, as its --resume reads)."""
    config, overrides = split_args(args or [])
    if run is None:
        if config is None:
            raise CnnlabUsage("missing CONFIG, e.g. cnnlab forward-check mnist_cnn")
        return load(config, overrides), data_dir
    from cnnlab.config import load_config
    from cnnlab.runs import CONFIG, open_run, own_data_dir

    path = open_run(run) / CONFIG
    trained = load_config(path, [], stored=True)
    if config is not None:  # it must name the run's own model; the overrides apply to the check, after
        named = load(config, [])
        if named.model != trained.model or named.dataset.name != trained.dataset.name:
            raise ConfigError(
                f"{config} names {model_text(named.model, trained.model)} on {named.dataset.name}, but {run} trained "
                f"{model_text(trained.model, named.model)} on {trained.dataset.name}; leave CONFIG out to check the run"
            )
    cfg = load_config(path, overrides, stored=True)
    return cfg, own_data_dir(run, data_dir, cfg, trained)


def model_text(model, other) -> str:
    """model's name, and where other is the same model, the options it sets otherwise: 'lenet (activation relu, pooling max)'."""
    if model.name != other.name:
        return model.name
    mine, theirs = model.model_dump(), other.model_dump()
    options = [f"{key} {value}" for key, value in mine.items() if theirs[key] != value]
    return f"{model.name} ({', '.join(options)})" if options else model.name


DEFAULT_N = 8  # forward-check's batch
SHOWN_PREDICTIONS = 20  # a larger batch's predicted classes: the first these many, the count, and whether they agree


def prediction_lines(numpy_classes: list[int], torch_classes: list[int]) -> list[str]:
    """Both predicted classes lists, whole up to SHOWN_PREDICTIONS; past that their start, the count
    and on how many images NumPy and PyTorch disagree."""
    n = len(numpy_classes)
    if n <= SHOWN_PREDICTIONS:
        return [f"predicted classes, NumPy:   {numpy_classes}", f"predicted classes, PyTorch: {torch_classes}"]
    differ = [i for i, (a, b) in enumerate(zip(numpy_classes, torch_classes)) if a != b]
    agreement = (
        f"NumPy and PyTorch predict different classes for {len(differ):,} of the {n:,} images (the first: image {differ[0]})"
        if differ else f"NumPy and PyTorch predict the same class for all {n:,} images"
    )
    shown = lambda classes: ", ".join(map(str, classes[:SHOWN_PREDICTIONS])) + ", ..."  # noqa: E731
    return [
        f"predicted classes, NumPy:   [{shown(numpy_classes)}] ({n:,} in all)",
        f"predicted classes, PyTorch: [{shown(torch_classes)}] ({n:,} in all)",
        agreement,
    ]


@app.command("forward-check")
def forward_check(
    args: list[str] = typer.Argument(None, metavar="CONFIG [KEY=VALUE]...", help="A YAML config (optional with --run)."),
    run: Optional[Path] = typer.Option(None, "--run", parser=not_empty("--run", Path), metavar="RUN_DIR", help="Check this run's trained weights (model.pt) instead of a fresh init."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help=f"Test images in the batch (default {DEFAULT_N}); no more than the test split holds after dataset.test_subset."),
    data_dir: Optional[Path] = DataDir,
):
    """Redo one batch's forward pass by hand in NumPy, layer by layer; exit 1 if a layer differs by > 1e-4 (relative to outputs above 1)."""
    from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES
    from cnnlab.report import print_table, say

    cfg, data_dir = _checked_config(args, run, data_dir)
    import torch  # once the arguments are good

    from cnnlab import forward_check as fc
    from cnnlab.data import load_splits
    from cnnlab.models import build_model
    from cnnlab.runs import load_model_weights
    from cnnlab.transforms import Pipeline

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, DATASET_SHAPES[cfg.dataset.name], DATASET_CLASSES[cfg.dataset.name])
    fc.layers(model)  # a model with layers the check does not cover is refused before any data loads
    if run is not None:
        load_model_weights(model, run)
    _, test = load_splits(cfg, data_dir, stored=run is not None)
    pipeline = Pipeline.for_split(cfg.transform, test, cfg.seed)
    held = len(test.images[: cfg.dataset.test_subset])  # the test split as a run evaluates it
    if n is not None and n > held:  # the first `held` images still check every layer: say so, go on
        subset = f" (dataset.test_subset={cfg.dataset.test_subset})" if cfg.dataset.test_subset == held else ""
        print(f"note: --n {n} is more than the {held:,} {cfg.dataset.name} test images{subset}; checking all {held:,}", file=sys.stderr)
    x = pipeline.prepare(test.images[: min(n or DEFAULT_N, held)], train=False)  # the batch as evaluation sees it
    rows, out_torch, out_numpy = fc.check(model, x)

    weights = f"the trained weights of {run}" if run is not None else f"a fresh init (seed {cfg.seed})"
    say(f"{cfg.model.name} on {len(x)} {cfg.dataset.name} test images, with {weights}")
    data = [
        {"layer": r.name, "type": r.kind, "output shape": "x".join(map(str, r.output_shape)),
         "max |NumPy - PyTorch|": f"{r.max_abs_diff:.2e}", "ok": "yes" if r.ok else "NO"}
        for r in rows
    ]
    print_table(data)
    if out_torch.shape[1] == 1:  # one sigmoid output: the probability of class 1, as the toy prints it
        for i in range(len(x)):
            say(f"image {i} (label {int(test.labels[i])}): prediction NumPy {out_numpy[i, 0]:.6f}, PyTorch {out_torch[i, 0].item():.6f}")
    else:
        for line in prediction_lines(out_numpy.argmax(1).tolist(), out_torch.argmax(1).tolist()):
            say(line)
    bad = fc.first_failure(rows)
    if bad is not None:
        raise CnnlabError(
            f"forward-check failed: layer {bad.name} ({bad.kind}) differs from PyTorch by {bad.max_abs_diff:.3g} > {bad.tolerance:.3g}"
            + (f" ({fc.TOLERANCE:g} x its largest output, {bad.largest:.3g})" if bad.largest > 1 else "")
        )
    print(
        f"all {len(rows)} layers match PyTorch within {fc.TOLERANCE:g} (times a layer's largest output where that is above 1; "
        f"largest difference {max(r.max_abs_diff for r in rows):.2e})"
    )


@app.command()
def samples(
    args: list[str] = typer.Argument(None, metavar="DATASET [KEY=VALUE]...", help="mnist | fashion-mnist | cifar10 | toy, and transform overrides, e.g. transform.permute=true"),
    n: int = typer.Option(32, "--n", min=1, max=256, help="How many images."),
    config: Optional[Path] = typer.Option(None, "--config", parser=not_empty("--config", Path), metavar="CONFIG", help="Show the images after this config's deterministic transforms (a file, or a name: mnist_cnn)."),
    split: str = typer.Option("test", "--split", parser=split_name("--split"), help="test | train"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path. Default: RUNS_DIR/samples-DATASET-SPLIT[-CONFIG][-shift_dxX_dyY_MODE][-permute_seedS][-nN].png"),
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
):
    """A PNG grid of the first N images with their class names; the last line is the PNG's path."""
    from cnnlab.config import config_from_dict, leaf_keys, name_of_file, parse_override, read_config_yaml
    from cnnlab.named import config_path
    from cnnlab.runs import atomic_write, check_dir, ensure_dir, runs_root

    dataset, overrides = split_args(args or [], what="dataset", example="transform.permute=true")
    if dataset is None:
        raise CnnlabUsage("missing DATASET, e.g. cnnlab samples mnist")
    if out is not None and out.suffix.lower() != ".png":
        raise CnnlabUsage(f"--out must name a .png file (the grid is a PNG), not {out.name!r}")
    if config is not None:
        config = config_path(config)
    base = read_config_yaml(config) if config is not None else {"name": "samples", "model": {"name": "fc"}}
    base.setdefault("name", name_of_file(config) if config is not None else "samples")
    section = base.get("dataset") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{config}: dataset must be a section like {{name: {dataset}}}, not a {type(section).__name__}")
    if config is not None and section.get("name") not in (None, dataset):
        raise ConfigError(f"{config} is a config for {section['name']}, not {dataset}")
    base["dataset"] = {**section, "name": dataset}
    keys = {text: sorted(leaf_keys(dict([parse_override(text)]))) for text in overrides}  # dataset={test_subset: 5} sets dataset.test_subset
    named_by = [text for text in overrides if "dataset.name" in keys[text]]
    # DATASET after the overrides: a whole dataset={data_dir: ...} section would set it back to mnist
    cfg = config_from_dict(base, overrides + ([] if named_by else [f"dataset.name={dataset}"]), str(config or "samples"))
    if cfg.dataset.name != dataset:  # an override's dataset.name: two answers to which images to draw
        raise CnnlabUsage(f"{named_by[-1]} contradicts DATASET {dataset}: name the dataset once, as DATASET")
    # what sample_images applies (a subset would not change the split's first --n images)
    shown = ("dataset.name", "dataset.data_dir", "dataset.download", "transform.shift", "transform.permute", "seed")
    for text in overrides:
        for key in keys[text]:
            if not key.startswith(shown) and key not in ("dataset", "transform"):
                raise CnnlabUsage(f"{key} does not change what samples draws: it draws the split's first --n images, after transform.shift and transform.permute only")

    check_dir(runs_root(runs_dir))  # a runs directory under a file: refused before the data is read, as by every command
    from cnnlab import samples as S  # torch: once the arguments are good

    images, labels, classes = S.sample_images(cfg, n, split, data_dir)
    png = S.grid_png(images, labels, classes, S.title_for(cfg, len(images), split))
    path = out if out is not None else S.default_out(runs_root(runs_dir), cfg, split, len(images), config is not None)
    ensure_dir(path.parent, "runs directory" if out is None else "directory")
    atomic_write(path, png)
    print(path)
