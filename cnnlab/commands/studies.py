"""`cnnlab compare`, `cnnlab shift-sweep` and `cnnlab show`: the studies as commands, and a look at
one run or study. Heavy imports (torch, pandas, matplotlib) happen inside the command bodies."""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli import CnnlabUsage, DataDir, Device, RunsDir, app, dataset_name, not_empty, positional_and_overrides, split_name, tell_finished

Epochs = typer.Option(None, "--epochs", min=1, help="Epochs for every trained model (overrides train.epochs).")
Dataset = typer.Option(None, "--dataset", parser=dataset_name, help="Run every member on this dataset: mnist | fashion-mnist | cifar10 | toy.")
Address = typer.Option(None, "--address", parser=not_empty("--address"), help="Ray cluster address: run the cells there instead of one after another here.")
Resume = typer.Option(None, "--resume", parser=not_empty("--resume", Path), metavar="STUDY_DIR", help="Continue an interrupted or failed study: its finished cells are kept, the others resumed. Takes no other arguments but --address and --data-dir.")


def _slug(label: str) -> str:
    """A label as a file name's part: other characters than a name takes made '_', as long as a name
    may be (a label of any length still makes a file name the file system takes)."""
    from cnnlab.config import as_name

    return as_name(label).strip("_") or "model"


def _image_names(labels: list[str]) -> list[str]:
    """image_<slug>.png per label; a name an earlier label took, ignoring case (macOS and Windows do),
    gets -2, -3, ... (CNN+aug and 'CNN aug'; CNN+aug and 'cnn aug')."""
    names: list[str] = []
    taken: set[str] = set()  # lower case
    for label in labels:
        stem = f"image_{_slug(label)}"
        name, n = f"{stem}.png", 2
        while name.lower() in taken:
            name, n = f"{stem}-{n}.png", n + 1
        names.append(name)
        taken.add(name.lower())
    return names


def _joined(values) -> str:
    return ",".join(dict.fromkeys(str(v) for v in values))


def _cell_paths(record, results) -> list[str]:
    return [os.path.relpath(r.path, record.path) for r in results]


def _plan_cells(cells) -> list[dict]:
    from cnnlab.config import config_to_dict

    return [{"labels": c.labels, "config": config_to_dict(c.cfg)} for c in cells]


def _planned_cells(plan: dict, source: str) -> list:
    from cnnlab.config import config_from_dict
    from cnnlab.runner import Cell

    return [Cell(config_from_dict(c["config"], source=source, stored=True), c["labels"]) for c in plan["cells"]]


def _resume_only(resume: Path, given: dict) -> None:
    """--resume takes everything from the study directory: refuse anything else that would be ignored."""
    extra = [name for name, value in given.items() if value is not None and value != []]
    if extra:
        raise CnnlabUsage(f"--resume continues the study in {resume} as it was planned: give no {', '.join(extra)} (only --address and --data-dir)")


def _each_run_once(from_run: list[Path]) -> None:
    """A run given twice to --from-run (however spelled: relative, a trailing slash, a symlink) would be
    swept twice, two identical lines in every table and figure."""
    seen: dict[str, Path] = {}  # the run's real path -> its first spelling
    for path in from_run:
        real = os.path.realpath(path)  # never raises, a symlink loop too (Path.resolve does before 3.13)
        first = seen.get(real)
        if first is not None:
            also = "" if first == path else f" (also as {path})"
            raise CnnlabUsage(f"--from-run {first} is given twice{also}: give each run once")
        seen[real] = path


def _check_cells(configs, data_dir, address, new=None) -> None:
    """The devices and datasets of the cells that train here, and the subsets of those that start a
    run (new, default all), before a study starts or goes on (one that can never train would be left
    behind, offering a resume); a cluster's nodes have their own, but the cluster must be there, and
    Ray wherever --address asks for it (also 'local')."""
    if address is not None and configs:
        from cnnlab.ray_backend import check_reachable, require_ray

        require_ray("--address")
        check_reachable(address)  # HOST:PORT, and the cluster 'auto' finds here; 'local' passes
    if address in (None, "local"):
        from cnnlab.runner import check_here

        check_here(configs, data_dir, new)


def _one_dataset(configs, verb: str) -> None:
    """A study's table and reading put its models side by side on one dataset."""
    from cnnlab.errors import ConfigError

    datasets = sorted({c.dataset.name for c in configs})
    if len(datasets) > 1:
        hint = " (--dataset NAME trains every model on one)" if verb == "compare" else ""
        raise ConfigError(f"the models are trained on different datasets ({', '.join(datasets)}); {verb} one dataset at a time{hint}")


def _to_train(cells, previous=None) -> list:
    """The configs of the cells a study still trains: all of a new one's; a resumed one's without a
    completed run."""
    from cnnlab.runner import finished_result

    return [c.cfg for c, p in zip(cells, previous or [None] * len(cells)) if p is None or finished_result(p) is None]


def _to_start(cells, previous=None) -> list:
    """The configs of the cells that start a new run: all of a new study's; a resumed one's without an
    earlier run to take or continue (a continued run trains as an earlier cnnlab accepted it)."""
    return [c.cfg for c, p in zip(cells, previous or [None] * len(cells)) if p is None]


@app.command()
def compare(
    args: list[str] = typer.Argument(None, metavar="STUDY|CONFIG... [KEY=VALUE]...", help="A named study (e.g. fc-vs-cnn), a study file, or configs (files or names, e.g. mnist_fc mnist_cnn); then dotted overrides for every cell."),
    permute: Optional[bool] = typer.Option(None, "--permute/--no-permute", help="Add the fixed-pixel-permutation condition (default: the study's)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Seeds per cell (default: the study's, else 3)."),
    epochs: Optional[int] = Epochs,
    dataset: Optional[str] = Dataset,
    address: Optional[str] = Address,
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
    device: Optional[str] = Device,
    resume: Optional[Path] = Resume,
):
    """Train every model x condition x seed; print mean ± std per model and condition and what it means.

    The last line is the study directory (table.csv/.md, cells.csv, accuracy.png, cells/); also when the
    study is interrupted or fails once it exists.
    """
    from cnnlab.errors import counted
    from cnnlab.report import markdown, note, print_table, say
    from cnnlab.runner import previous_runs, run_cells
    from cnnlab.runs import check_dir, resumed_data_dir, runs_root
    from cnnlab.studies import compare as study
    from cnnlab.studies.record import StudyRecord
    from cnnlab.studies.spec import check_models, common_overrides, resolve

    if resume is not None:
        _resume_only(resume, {"STUDY, CONFIG or KEY=VALUE": args, "--permute/--no-permute": permute, "--seeds": seeds, "--epochs": epochs,
                              "--dataset": dataset, "--runs-dir": runs_dir, "--device": device})
        record = StudyRecord.reopen(resume, "compare")
        plan = record.plan
        cells, name, datasets = _planned_cells(plan, str(resume)), plan["name"], plan["datasets"]
        data_dir = resumed_data_dir(data_dir, plan["data_dir"], record.cells, [c.cfg for c in cells])
        what = f"{counted(len(cells), 'run')}, resumed"
        previous = previous_runs(cells, record.cells)
        _check_cells(_to_train(cells, previous), data_dir, address, _to_start(cells, previous))
    else:
        paths, overrides = positional_and_overrides(args or [])
        if not paths:
            raise CnnlabUsage("missing STUDY or CONFIG files, e.g. cnnlab compare fc-vs-cnn --permute")
        check_dir(runs_root(runs_dir))  # before the data is looked for
        spec, members = resolve(paths, common_overrides(epochs, dataset, device) + overrides)
        _one_dataset([m.cfg for m in members], "compare")
        permute = spec.permute if permute is None else permute
        seeds = seeds or spec.seeds
        cells = study.make_cells(members, seeds, permute)
        check_models(members)
        name, datasets = spec.name, _joined(m.cfg.dataset.name for m in members)
        what = f"{len(members)} model(s) x {2 if permute else 1} condition(s) x {seeds} seed(s) = {counted(len(cells), 'run')}"
        _check_cells([m.cfg for m in members], data_dir, address)
        plan = {"name": name, "datasets": datasets, "data_dir": str(data_dir.resolve()) if data_dir else None, "cells": _plan_cells(cells)}
        record = StudyRecord(
            runs_root(runs_dir), name, plan, study="compare", description=spec.description, dataset=datasets,
            model=_joined(m.cfg.model.name for m in members), members={m.label: m.source for m in members},
            epochs=max(m.cfg.train.epochs for m in members), seeds=seeds, permute=permute, test_acc=None, cells=[],
        )
        previous = None
    done: list = []

    def on_done(cell, result):
        done.append(result)
        s = result.summary
        record.update(cells=_cell_paths(record, done), train_seconds=sum(r.summary["train_seconds"] for r in done))
        condition = ", permuted pixels" if cell.labels["permuted"] else ""
        say(f"[{len(done)}/{len(cells)}] {cell.labels['model']} seed {cell.labels['seed']}{condition}: test accuracy {s['test_acc']:.2%}, {s['train_seconds']:.1f} s")

    with record.running():
        say(f"{name}: {what} in {record.path}")
        results = run_cells(cells, runs_dir=record.cells, data_dir=data_dir, address=address, on_done=on_done, previous=previous, on_note=note)
        rows = [study.cell_row(c, r) | {"run_dir": p} for c, r, p in zip(cells, results, _cell_paths(record, results))]
        summary = study.summarize(rows)
        shown, text = study.display_rows(summary), study.reading(summary)
        record.write_table("table", summary.to_dict("records"), f"{markdown(shown)}\n{text}\n")
        record.write_table("cells", rows)
        from cnnlab.figures import comparison_bars  # matplotlib: half a second before any check

        record.write_figure("accuracy.png", comparison_bars(summary, f"{name} on {datasets}"))
        record.update(reading=text, cells=_cell_paths(record, results), train_seconds=sum(r["train_seconds"] for r in rows))
    def tell() -> None:
        print_table(shown, title=f"{name} on {datasets}")
        say(text)

    tell_finished(record.path, "study", tell)


@app.command("shift-sweep")
def shift_sweep(
    args: list[str] = typer.Argument(None, metavar="[STUDY|CONFIG...] [KEY=VALUE]...", help="What to train (default: the shift-sweep study: Fashion-MNIST FC, CNN, CNN with translation augmentation)."),
    from_run: list[Path] = typer.Option(None, "--from-run", parser=not_empty("--from-run", Path), metavar="RUN_DIR", help="Reuse this run's trained model (repeatable); nothing is trained unless configs are given too."),
    max_shift: Optional[int] = typer.Option(None, "--max-shift", help="Sweep shifts -N..+N pixels (default 5)."),
    axis: Optional[str] = typer.Option(None, "--axis", help="x | y | both (a 2-D grid). Default x."),
    mode: Optional[str] = typer.Option(None, "--mode", help="roll (wrap around, as in the study) | zero (black fill). Default roll."),
    image_index: Optional[int] = typer.Option(None, "--image-index", help="The single-image view's image (default 24150, the study's Pullover)."),
    image_split: Optional[str] = typer.Option(None, "--image-split", parser=split_name("--image-split"), help="train | test: where --image-index points (default train)."),
    epochs: Optional[int] = Epochs,
    dataset: Optional[str] = Dataset,
    address: Optional[str] = Address,
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
    device: Optional[str] = Device,
    resume: Optional[Path] = Resume,
):
    """Accuracy of each model on shifted test images, and one image's class probabilities per shift.

    The last line is the study directory (table.csv/.md, accuracy.png, image_*.png, cells/); also when the
    study is interrupted or fails once it exists.
    """
    from cnnlab.config import validate
    from cnnlab.report import markdown, note, print_table, say
    from cnnlab.runner import Cell, previous_runs, run_cells
    from cnnlab.runs import check_dir, finished_run, resumed_data_dir, runs_root
    from cnnlab.studies.record import StudyRecord
    from cnnlab import named
    from cnnlab.studies.spec import SweepSpec, check_models, common_overrides, load_study, resolve

    if resume is not None:
        _resume_only(resume, {"STUDY, CONFIG or KEY=VALUE": args, "--from-run": from_run, "--max-shift": max_shift, "--axis": axis,
                              "--mode": mode, "--image-index": image_index, "--image-split": image_split, "--epochs": epochs,
                              "--dataset": dataset, "--runs-dir": runs_dir, "--device": device})
        record = StudyRecord.reopen(resume, "shift-sweep")
        plan = record.plan
        name, cells, device = plan["name"], _planned_cells(plan, str(resume)), plan["device"]
        opts = validate(plan["options"], SweepSpec, f"{resume}: plan")
        to_reuse = [(r["path"], r["label"]) for r in plan["reused"]]
    else:
        paths, overrides = positional_and_overrides(args or [])
        from_run = from_run or []
        check_dir(runs_root(runs_dir))  # before the data is looked for
        _each_run_once(from_run)
        for path in from_run:  # a path that is no finished run: told before torch loads
            finished_run(path, "sweep")
        if from_run and not paths:
            if overrides or epochs is not None or dataset is not None:
                raise CnnlabUsage("KEY=VALUE, --epochs and --dataset set up training; --from-run models are used as trained")
            name, members, defaults = "shift-sweep", [], load_study(named.find("shift-sweep", "study")).sweep
        else:
            spec, members = resolve(paths or ["shift-sweep"], common_overrides(epochs, dataset, device) + overrides)
            name, defaults = spec.name, spec.sweep
        given = {"max_shift": max_shift, "axis": axis, "mode": mode, "image_index": image_index, "image_split": image_split}
        options = {k: f"--{k.replace('_', '-')}" for k in given}  # a refused value is named as it was typed
        opts = validate({**defaults.model_dump(), **{k: v for k, v in given.items() if v is not None}}, SweepSpec, "", names=options)
        cells = [Cell(m.cfg, {"model": m.label}) for m in members]
        to_reuse = [(path, None) for path in from_run]
    # torch (and matplotlib) once the arguments and configs are good
    import pandas as pd

    from cnnlab.data import load_splits
    from cnnlab.experiment import resolve_device
    from cnnlab.figures import accuracy_vs_shift, probability_heatmap, shift_heatmaps
    from cnnlab.studies import shift_sweep as study

    # everything that can be refused is checked before any training: the runs to reuse, one dataset, the image
    reused = [study.load_trained(path, label, device) for path, label in to_reuse]
    configs = [c.cfg for c in cells] + [t.cfg for t in reused]
    if resume is not None:
        data_dir = resumed_data_dir(data_dir, plan["data_dir"], record.cells, configs)
    _one_dataset(configs, "sweep")
    if resume is None:
        check_models(members)
    previous = previous_runs(cells, record.cells) if resume is not None else None
    for cfg in configs:  # the sweep itself evaluates every model here, after training, wherever that ran
        resolve_device(cfg.device)  # --device is in every config already (the cells', and load_trained's)
    to_start = _to_start(cells, previous)
    _check_cells(_to_train(cells, previous), data_dir, address, to_start)
    # only a config that starts a run is refused a subset larger than its split: a trained one (a --from-run
    # run's, a resumed study's cell) is on disk as an earlier cnnlab accepted it (see load_splits)
    image, label, classes = study.pick_image(load_splits(configs[0], data_dir, stored=configs[0] not in to_start), opts.image_index, opts.image_split)
    if resume is None:
        plan = {
            "name": name, "options": opts.model_dump(), "device": device, "data_dir": str(data_dir.resolve()) if data_dir else None,
            "cells": _plan_cells(cells), "reused": [{"label": t.label, "path": str(t.run_dir.resolve())} for t in reused],
        }
        record = StudyRecord(runs_root(runs_dir), name, plan, study="shift-sweep", **opts.model_dump(), cells=[], test_acc=None,
                             dataset=configs[0].dataset.name, model=_joined(c.model.name for c in configs), epochs=max(c.train.epochs for c in configs))

    with record.running():
        if len({c.dataset.test_subset for c in configs}) > 1:  # each model is tested on its run's own test images
            each = ", ".join(f"{c.name} {c.dataset.test_subset or 'all'}" for c in configs)
            print(f"note: the models are tested on different test sets (dataset.test_subset: {each}); their accuracies compare less well",
                  file=sys.stderr, flush=True)
        if cells:
            say(f"{name}: training {len(cells)} model(s){', resumed,' if resume is not None else ''} in {record.path}")
        done: list = []

        def on_done(cell, r):  # the record holds each finished cell at once, as compare's does (a study cut off lists them)
            done.append(r)
            record.update(cells=_cell_paths(record, done), train_seconds=sum(x.summary["train_seconds"] for x in done))
            say(f"{cell.labels['model']}: test accuracy {r.summary['test_acc']:.2%} after {r.summary['epochs']} epoch(s), {r.summary['train_seconds']:.1f} s")

        results = run_cells(cells, runs_dir=record.cells, data_dir=data_dir, address=address, on_done=on_done, previous=previous, on_note=note)
        trained = [study.load_trained(r.path, c.labels["model"], device) for c, r in zip(cells, results)]
        for t in reused:
            if t.label in {u.label for u in trained}:
                t.label = f"{t.label}-{t.run_dir.name.rsplit('-', 1)[-1]}"
            trained.append(t)
        record.update(dataset=configs[0].dataset.name, model=_joined(t.cfg.model.name for t in trained), epochs=max(t.cfg.train.epochs for t in trained),
                      members={t.label: str(t.run_dir) for t in trained}, cells=_cell_paths(record, results),
                      train_seconds=sum(r.summary["train_seconds"] for r in results))

        splits = [load_splits(t.cfg, data_dir, stored=True) for t in trained]  # each model's (train, test), read once for both views
        rows = [row for t, s in zip(trained, splits) for row in study.sweep(t, s, study.offsets(opts.max_shift, opts.axis), opts.mode)]
        title = f"{name}: test accuracy on shifted {record.summary['dataset']} test images"
        if opts.axis == "both":
            shown = {f"{t.label}: test accuracy (%)": study.grid_table(rows, t.label) for t in trained}
            md = "".join(f"### {heading}\n\n{markdown(r)}\n" for heading, r in shown.items())
            figure = shift_heatmaps(pd.DataFrame(rows), opts.mode, title)
        else:
            shown = {"test accuracy": study.accuracy_table(rows, opts.axis)}
            md = markdown(shown["test accuracy"])
            figure = accuracy_vs_shift(pd.DataFrame(rows), opts.axis, opts.mode, title)
        text = study.reading(rows, opts.axis, opts.mode, {t.label: study.test_images(t, test) for t, (_, test) in zip(trained, splits)})
        record.write_table("table", rows, f"{md}\n{text}\n")
        record.write_figure("accuracy.png", figure)

        # the study's single-image view: every class's probability at every shift of one image
        image_axis = "y" if opts.axis == "y" else "x"
        shifts = study.offsets(opts.max_shift, image_axis)
        prob_rows, image_lines = [], []
        for t, (train, _), figure_name in zip(trained, splits, _image_names([t.label for t in trained])):
            probs = study.image_probabilities(t, train, image, shifts, opts.mode)
            steps = [dx if image_axis == "x" else dy for dx, dy in shifts]
            heading = f"{t.label}: {opts.image_split} image {opts.image_index} ({classes[label]}) shifted along {image_axis} ({opts.mode})"
            record.write_figure(figure_name, probability_heatmap(probs, steps, classes, heading))
            prob_rows += [{"model": t.label, "dx": dx, "dy": dy, **dict(zip(classes, map(float, p)))} for (dx, dy), p in zip(shifts, probs)]
            image_lines.append(study.image_reading(t.label, probs, steps, label, classes))
        record.write_table("image_probs", prob_rows)
        record.update(reading=text, image_reading=image_lines)
    def tell() -> None:
        for heading, shown_rows in shown.items():
            print_table(shown_rows, title=heading)
        say(text)
        for line in image_lines:
            say(line)

    tell_finished(record.path, "study", tell)


@app.command()
def show(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", parser=not_empty("RUN_DIR", Path, "give a run, study or sweep directory"), help="A run, study or sweep directory."),
    open_png: bool = typer.Option(False, "--open", help="Open the learning-curve PNG (a study's or sweep's figure) with the system viewer."),
):
    """A run's config and epoch table; writes learning_curves.png into the run (the last line).

    Given a study or sweep directory, it prints its table (and a study's reading).
    """
    from cnnlab import runs
    from cnnlab.config import read_yaml
    from cnnlab.errors import RunError
    from cnnlab.report import console, print_epochs, say, table

    path = Path(run_dir)
    summary = runs.read_json(path / runs.SUMMARY, {"files": list}) if (path / runs.SUMMARY).is_file() else {}
    if summary.get("kind") in ("study", "sweep"):
        what = summary.get("study") or summary["kind"]
        started = f", started {summary['started_at']}" if summary.get("started_at") else ""  # (a summary edited by hand: no None)
        say(f"{summary.get('name') or path.name} ({what}), {runs.shown_status(summary, path) or 'status unknown'}{started}")
        if summary.get("error"):
            say(f"why: {summary['error']}")
        for table_md in ("table.md", "results.md"):  # a study's table, a sweep's points best first
            if (path / table_md).is_file():
                say(runs.read_text(path / table_md))
        files = [f for f in summary.get("files") or [] if (path / str(f)).is_file()]  # those still there
        files = files or sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        say("files: " + ", ".join(map(str, files)))
        if open_png:  # the study's or sweep's main figure: its first PNG (accuracy.png, <metric>.png)
            figure = next((path / f for f in map(str, files) if f.endswith(".png") and (path / f).is_file()), None)
            if figure:
                _open_png(figure)
            else:
                print(f"note: --open found no figure in {path} to open", file=sys.stderr)
        return
    runs.open_run(path)
    runs.check_types(summary, {**runs.RESULTS, "status": str, "device": str}, path / runs.SUMMARY)  # edited by hand: one line
    cfg = runs.check_types(read_yaml(path / runs.CONFIG, stored=True), dict.fromkeys(SECTIONS, dict), path / runs.CONFIG)
    console.print(table(_config_rows(cfg, summary, path), ["key", "value"], title=f"{path.name}"))
    metrics = runs.read_metrics(path)
    if metrics.empty:
        raise RunError(f"{path} has no finished epoch yet: no epoch table or learning curves to show")
    print_epochs(metrics.to_dict("records"))
    from cnnlab.figures import learning_curves, save

    png = path / "learning_curves.png"
    title = f"{cfg.get('name')}: {(cfg.get('model') or {}).get('name')} on {(cfg.get('dataset') or {}).get('name')}"
    save(learning_curves(metrics, title, loss=_loss_name(cfg), label_smoothing=_label_smoothing(cfg, path)), png)
    if open_png:
        _open_png(png)
    print(png)


def _open_png(png: Path) -> None:
    """Open png in the system viewer; say so on stderr where there is none."""
    if typer.launch(str(png)):  # non-zero: no viewer here (xdg-open missing on a headless machine)
        print(f"note: --open found no system viewer here (xdg-open); the PNG is {png}", file=sys.stderr)


SECTIONS = ("dataset", "transform", "model", "optimizer", "loss", "train")  # what show reads of a run's config.yaml
SHOWN_RESULTS = ("status", "params", "epochs", "test_acc", "train_seconds", "device")  # and of its summary.json
UNKNOWN = "unknown"  # a value summary.json lacks (the table's "missing" row names them)


def _missing(summary: dict) -> list[str]:
    """The SHOWN_RESULTS a run's summary.json lacks (or holds null); no test_acc before the first epoch is none yet."""
    return [k for k in SHOWN_RESULTS if summary.get(k) is None and not (k == "test_acc" and summary.get("epochs") == 0)]


def _format(value, spec: str) -> str:
    """value formatted with spec; "-" for None, and anything of another type (a hand-edited summary)
    as it is."""
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _loss_name(cfg: dict) -> str:
    """The loss a run's config.yaml names, else the default one."""
    from cnnlab.config import LossConfig

    return (cfg.get("loss") or {}).get("name", LossConfig().name)


def _label_smoothing(cfg: dict, path: Path) -> float:
    """The label smoothing a run's config.yaml names (one line where it is not a number), else none."""
    from cnnlab import runs

    loss = runs.check_types(cfg.get("loss") or {}, {"label_smoothing": numbers.Real}, path / runs.CONFIG)
    return loss.get("label_smoothing") or 0.0


def _config_rows(cfg: dict, summary: dict, path: Path) -> list[dict]:
    """The settings that matter, transforms only where they differ from the defaults, then results."""
    from cnnlab import runs
    from cnnlab.config import LossConfig, TrainConfig, TransformConfig, article_text, flatten

    def changed(section: str, schema) -> dict:  # the section's settings that differ from the defaults
        defaults = flatten(schema().model_dump(mode="json"))
        return {k: v for k, v in flatten(cfg.get(section) or {}).items() if defaults.get(k) != v}

    transform = changed("transform", TransformConfig)
    loss = {"name": _loss_name(cfg), **changed("loss", LossConfig)}
    # the train settings that move the numbers (cuDNN's nondeterministic algorithms only on CUDA)
    moving = ("max_steps", "amp", "compile", "tta") + (("deterministic",) if str(summary.get("device", "")).startswith("cuda") else ())
    train_changed = {k: v for k, v in changed("train", TrainConfig).items() if k in moving}
    dataset = cfg.get("dataset") or {}
    subsets = [f"{k}={dataset[k]}" for k in ("train_subset", "test_subset") if dataset.get(k)]
    model = flatten(cfg.get("model") or {})
    optimizer = flatten(cfg.get("optimizer") or {})
    train = cfg.get("train") or {}
    article = article_text(summary.get("reported"), transform.get("permute") is True)
    missing = _missing(summary)

    def known(key: str, spec: str) -> str:  # summary[key] as spec writes it, else UNKNOWN
        return UNKNOWN if key in missing else _format(summary.get(key), spec)

    done = f"{summary['epochs']} of {train.get('epochs')}" if "epochs" not in missing else f"{train.get('epochs')} planned"
    seconds = known("train_seconds", ".1f") + ("" if "device" in missing else f" on {summary['device']}")
    values = {
        "name": cfg.get("name"), **({"description": cfg["description"]} if cfg.get("description") else {}),
        "status": runs.shown_status(summary, path) or UNKNOWN,
        **({"why": summary["error"]} if summary.get("error") else {}),  # failed, stopped or interrupted: the reason
        "dataset": dataset.get("name"),
        **({"images": f"{_format(summary.get('train_size'), ',')} train, {_format(summary.get('test_size'), ',')} test"
            + (f" ({', '.join(subsets)})" if subsets else "")} if "train_size" in summary else {}),
        "model": ", ".join(f"{k}={v}" for k, v in model.items()), "params": known("params", ","),
        "transform": ", ".join(f"{k}={v}" for k, v in transform.items()) or "defaults",
        "optimizer": ", ".join(f"{k}={v}" for k, v in optimizer.items()),
        "schedule": cfg.get("schedule") or "none", "loss": ", ".join(f"{k}={v}" for k, v in loss.items()), "seed": cfg.get("seed"),
        "epochs": f"{done}, batch {train.get('batch_size')}"
        + "".join(f", {k}={v}" for k, v in train_changed.items()),
        "test accuracy": known("test_acc", ".2%") + (f" (article: {article})" if article else ""),
        "train seconds": seconds,
        **({"missing": f"{runs.SUMMARY} has no {', '.join(missing)}"} if missing else {}),
    }
    return [{"key": k, "value": str(v)} for k, v in values.items()]
