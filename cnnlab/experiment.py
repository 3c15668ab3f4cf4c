"""One run from a resolved config: data -> transforms -> model -> engine -> run directory.

`run()` is the single place a config becomes a trained model and a run directory; `cnnlab train`,
the studies and the sweeps all call it. It keeps summary.json's status true (running, completed,
failed, interrupted, or stopped by a sweep's scheduler), writes a resumable checkpoint after every epoch and resumes from one (what a
checkpoint holds and how a run is restored to it: cnnlab.resume).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cnnlab import runs, tensorboard
from cnnlab.bench.machine import Stretch
from cnnlab.config import Config, config_to_dict, dump_yaml, load_config
from cnnlab.data import load_splits, resolve_data_dir
from cnnlab.engine import Data, State, StepGraph, fit, gradients_channels_last, loss_function, steps_per_epoch
from cnnlab.errors import ConfigError, RunError, first_line, in_run, shell_word, signal_name
from cnnlab.flops import training_flops
from cnnlab.interrupts import Interrupted, Signals
from cnnlab.models import build_model, count_params, unwrap
from cnnlab.provenance import provenance
from cnnlab.resumable import check_resume_changes
from cnnlab.resume import check_epochs, checkpoint_of, drop_epochs_past, reopen
from cnnlab.transforms import Pipeline

DEFAULT_THREADS = torch.get_num_threads()  # torch's choice (the machine's cores), before any run changes it
SMALL_STEP_FLOPS = 1e7  # training FLOPs per step under which a run uses one CPU thread (cpu_threads)
DATA_INIT_IMAGES = 5000  # training images a model's init_from_data sees (fastnet's whitening)


class Stopped(Exception):
    """Raised by an on_epoch callback to end the run after that epoch (a sweep's scheduler stopped
    the trial): the run returns normally with status 'stopped' and the message as its reason."""


@dataclass
class RunResult:
    path: Path
    summary: dict
    metrics: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------- building blocks
def resolve_device(name: str, option: str | None = None) -> torch.device:
    """The torch device for a config's device name. option: the command-line option that alone sets
    it (bench's --device: its cases' configs do not count), which an error then tells to change."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            fix = f"{option} cpu or {option} auto" if option else "cpu or auto (--device cpu, or device: cpu in the config)"
            raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device; use {fix}")
        # the index read here: torch.device() fails on what the schema takes (cuda:01, an index past int32)
        index = name.partition(":")[2]
        if int(index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", int(index)) if index else torch.device("cuda")
    return torch.device(name)


def build_optimizer(cfg, model: torch.nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """The config's optimizer for model's parameters. fused: one kernel for all parameters instead of
    a few per parameter (SGD's result is bit-identical; Adam's differs in the last bits); the
    tutorials' loop passes False."""
    o = cfg.optimizer
    params = list(model.parameters())
    fused = fused or None  # None: PyTorch's default, a Python loop over the parameters on the CPU
    if o.name == "sgd":
        if o.bn_lr_scale != 1:  # airbench's BatchNorm shifts learn faster than the weights
            norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
            params = [
                {"params": [p for p in params if id(p) not in norm]},
                {"params": [p for p in params if id(p) in norm], "lr": o.lr * o.bn_lr_scale,
                 "weight_decay": o.weight_decay / o.bn_lr_scale},
            ]
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=fused)
    return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=o.weight_decay)


def build_scheduler(cfg, optimizer, steps_per_epoch: int):
    """A per-step LambdaLR, so every schedule resumes exactly from its state_dict."""
    s = cfg.schedule
    if s is None:
        return None
    total = steps_per_epoch * cfg.train.epochs
    if s.name == "step":
        factor = lambda step: s.gamma ** (step // (steps_per_epoch * s.step_size))  # noqa: E731
    elif s.name == "cosine":
        warm = s.warmup_epochs * steps_per_epoch

        def factor(step):
            if step < warm:
                return (step + 1) / warm
            t = min((step - warm) / max(total - warm, 1), 1.0)
            return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    elif s.name == "inverse_time":
        factor = lambda step: 1.0 / (1.0 + s.decay * step)  # noqa: E731
    else:  # onecycle: linear warm-up from start_ratio to 1, then linear decay to end_ratio

        def factor(step):
            peak = max(s.pct_start * total, 1)
            if step < peak:  # (the peak may fall between two steps: never above 1)
                return s.start_ratio + (1 - s.start_ratio) * min((step + 1) / peak, 1.0)
            return s.end_ratio + (1 - s.end_ratio) * max(0.0, (total - step) / max(total - peak, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(cfg: Config, device: torch.device, data_dir=None, stored: bool = False):
    """Load both splits once, apply the deterministic transforms once, move them to the device
    (stored: a resumed run's config, see load_splits)."""
    train, test = load_splits(cfg, data_dir, stored)
    n_train, n_test = cfg.dataset.train_subset, cfg.dataset.test_subset
    pipeline = Pipeline.for_split(cfg.transform, train, cfg.seed)
    memory = torch.channels_last if cfg.train.channels_last else torch.contiguous_format

    def put(images, labels, is_train):
        x = pipeline.prepare(images.to(device), train=is_train).contiguous(memory_format=memory)
        return x, labels.to(device)

    data = Data(*put(train.images[:n_train], train.labels[:n_train], True), *put(test.images[:n_test], test.labels[:n_test], False))
    return data, pipeline, train


def epoch_numbers(rows: list[dict]) -> dict:
    """summary.json's numbers from the epochs in rows: the last one's, the best test accuracy and the
    training time (None and 0 before the first epoch)."""
    last = rows[-1] if rows else {}
    return {
        **{k: last.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "best_test_acc": max((r["test_acc"] for r in rows), default=None),
        "train_seconds": sum(r["epoch_seconds"] for r in rows),
    }


# ---------------------------------------------------------------------------- the run
def cpu_threads(cfg: Config, model: torch.nn.Module, input_shape: tuple[int, ...], share: int | None = None) -> int:
    """train.threads, else 1 for a small training step (under SMALL_STEP_FLOPS), else the run's
    share of the CPU (a Ray trial's cores), else torch's default.

    A small step is a string of tiny kernels: a second thread saves little there, and on a busy
    machine every parallel region waits for a thread that is not running (measured on the 2-core
    machine under load: 10-100x slower steps with 2 threads than with 1). Above 10 MFLOP a step gains
    from both cores on an idle machine (study A's CNN: 2.3 s per epoch with 2 threads, 3.7 s with 1);
    on a busy one, set train.threads=1.
    """
    if cfg.train.threads:
        return cfg.train.threads
    step_flops = training_flops(model, input_shape) * cfg.train.batch_size
    return 1 if step_flops < SMALL_STEP_FLOPS else (share or DEFAULT_THREADS)


def crowding_note(threads: int, others: float | None, seconds: float, cores: int) -> str | None:
    """A note when other work (others: cores' worth, measured over `seconds` while the run set up)
    leaves fewer free cores than the run has threads. Each layer's threads then wait at its end for
    one that is not running: on the 2-core machine, with other jobs at about 2 cores' worth, study
    A's CNN trained 6,400 images in 7.0 s on 2 threads and in 0.62 s on 1. The note does not change
    the threads: they are the config's, so that a seed gives the same numbers on a busy machine too."""
    if threads < 2 or others is None or seconds < 0.2 or others <= cores - threads + 0.5:
        return None
    return (
        f"note: other work is using {others:.1f} of this machine's {cores} cores; this run's {threads} threads wait "
        "for each other at every layer, so train.threads=1 may train several times faster here (its numbers "
        "differ in the last digits)"
    )


def setup(
    cfg: Config, device: torch.device, data_dir=None, cpu_share: int | None = None, stored: bool = False,
) -> tuple[Data, Pipeline, State, Callable]:
    """What a run trains with, from cfg alone: threads (within cpu_share, the cores it may use),
    seeds, prepared data, the model (channels-last, compiled when asked), optimizer, schedule,
    generators and loss (stored: a resumed run's config, see load_splits). `cnnlab bench` shares it."""
    seed_everything(cfg.seed)
    data, pipeline, train_split = prepare_data(cfg, device, data_dir, stored)
    input_shape = tuple(train_split.images.shape[1:])
    model = build_model(cfg.model, input_shape, len(train_split.classes)).to(device)
    if hasattr(model, "init_from_data"):  # fastnet's whitening filters come from the training images
        model.init_from_data(pipeline.as_trained(data.x_train[:DATA_INIT_IMAGES]))
    torch.set_num_threads(cpu_threads(cfg, model, input_shape, cpu_share))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        if device.type == "cpu" and not cfg.train.compile:  # (not measured on CUDA, where no GPU was at hand)
            gradients_channels_last(model)
    optimizer = build_optimizer(cfg, model)
    spe = steps_per_epoch(len(data.x_train), cfg.train.batch_size, cfg.train.max_steps)
    loss_fn = loss_function(cfg.loss.name, cfg.loss.label_smoothing)
    compile_whole_step = cfg.train.compile and device.type == "cpu"
    state = State(
        # on CUDA the model alone; on the CPU the whole step (below)
        model=torch.compile(model) if cfg.train.compile and not compile_whole_step else model,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg, optimizer, spe),
        order_gen=torch.Generator().manual_seed(cfg.seed),
        aug_gen=torch.Generator(device).manual_seed(cfg.seed + 1),
    )
    if device.type == "cuda":
        # cuDNN's default algorithms may add up in any order (atomics): runs of one seed would differ
        torch.backends.cudnn.deterministic = cfg.train.deterministic
    if replays_steps(cfg, device):
        state.step_graph = StepGraph(state.model, loss_fn, cfg.train.amp, cfg.train.batch_size, device)
    if compile_whole_step:
        # imported here: torch._dynamo, which compiled_step needs, costs a second in every process
        from cnnlab.aot_step import AotStep, takes_model
        from cnnlab.compiled_step import CompiledStep

        # the batches' size: a batch size above the training set's makes its one batch that set
        batch = min(cfg.train.batch_size, len(data.x_train))
        if takes_model(model, cfg.train.amp):  # compiled once, kept in cnnlab's cache (aot_step.py)
            state.compiled_step = AotStep(model, optimizer, loss_fn, (cfg.loss.name, cfg.loss.label_smoothing), batch)
        else:
            state.compiled_step = CompiledStep(model, optimizer, loss_fn, cfg.train.amp, batch)
    return data, pipeline, state, loss_fn


def replays_steps(cfg: Config, device: torch.device) -> bool:
    """Whether a run of cfg on device replays its steps as a CUDA graph (train.cuda_graphs)."""
    return device.type == "cuda" and cfg.train.cuda_graphs and not cfg.train.compile


def run(
    cfg: Config,
    *,
    runs_dir=None,
    data_dir=None,
    resume: str | Path | None = None,
    progress=None,
    on_epoch=None,
    cpu_share: int | None = None,
    on_note: Callable[[str], None] | None = None,
) -> RunResult:
    """Train cfg in a new run directory under runs_dir (or continue the run at `resume`), on at most
    cpu_share CPU threads when the config does not set train.threads (default: all cores). on_note
    gets the hints for the person watching (a machine too crowded for the run's threads).

    SIGINT, SIGTERM and SIGHUP raise Interrupted from the first line: before the run directory exists
    nothing is lost; after, the run is marked interrupted and keeps its last complete epoch.
    What it raises once the run directory holds a summary carries that directory (see in_run).
    """
    signals = Signals()
    with signals.installed():
        return _run(cfg, signals, runs_dir, data_dir, resume, progress, on_epoch, cpu_share, on_note)


def _run(cfg: Config, signals: Signals, runs_dir, data_dir, resume, progress, on_epoch, cpu_share, on_note) -> RunResult:
    device = resolve_device(cfg.device)
    if resume is not None:
        resume = runs.open_run(resume, resuming=True)
        trained = load_config(resume / runs.CONFIG, stored=True)  # the config the run trained with
        check_resume_changes(resume, trained, cfg)
        data_dir = runs.own_data_dir(resume, data_dir, cfg, trained)
    if cfg.train.tensorboard:
        tensorboard.require()
    setting_up = Stretch()
    data, pipeline, state, loss_fn = setup(cfg, device, data_dir, cpu_share, stored=resume is not None)
    if on_note is not None and device.type == "cpu" and cfg.train.threads is None:  # not a sweep's trials
        note = crowding_note(torch.get_num_threads(), setting_up.others(), setting_up.seconds(), os.cpu_count() or 1)
        if note:
            on_note(note)
    model = unwrap(state.model)
    path: Path | None = None  # set once the run directory holds a true summary
    log: tensorboard.EpochLog | None = None  # the TensorBoard log, when asked for
    rows: list[dict] = []
    summary: dict = {}
    compiled_before = 0.0
    kept = 0  # the epochs a resume would continue from: their model and checkpoint written

    def epoch_done(row: dict, st: State) -> None:
        nonlocal kept
        with signals.deferred():
            runs.write_table(path / runs.METRICS, [*rows, row])
            # only once metrics.csv holds the epoch: a failed write leaves the summary at the epochs it holds
            rows.append(row)
            summary.update(epochs=st.epoch, **epoch_numbers(rows))
            if st.compiled_step is not None:  # within train_seconds; over all of the run's sessions
                summary["compile_seconds"] = compiled_before + st.compiled_step.compile_seconds
                # this session's step taken from cnnlab's cache (aot_step.py), none compiled
                summary["compiled_step_cached"] = st.compiled_step.loaded > 0 and st.compiled_step.graphs == 0
                if st.compiled_step.crashed is not None:  # torch.compile's step trained instead (aot_step.py)
                    summary["compiled_step_crashed"] = st.compiled_step.crashed
            runs.atomic_torch_save(unwrap(st.model).state_dict(), path / runs.MODEL)
            if cfg.train.checkpoint:
                runs.atomic_torch_save(checkpoint_of(st), path / runs.CHECKPOINT)
            else:  # an older one (a resume that turned checkpoints off) would bring back earlier epochs
                (path / runs.CHECKPOINT).unlink(missing_ok=True)
            kept = st.epoch  # what a resume continues from, whatever fails below
            runs.write_json(path / runs.SUMMARY, summary)
            if log is not None:  # with the files: a signal they held off would stop the run before it
                log.epoch(row)
        if signals.received is not None:  # a signal whose Interrupted library code swallowed (seen once): stop now
            raise Interrupted(signals.received)
        if progress is not None:
            progress.epoch_end(row)
        if on_epoch is not None:
            on_epoch(row, path)

    def finish(status: str, error: str | None = None) -> RunError | None:
        """Write the run's last status; the RunError when the directory can no longer be written
        (the error that stopped the run says more, and a resume works from the file as it is)."""
        signals.critical = True  # a second Ctrl-C must not cut this last write short
        if path is not None:  # else nothing was written (a refused resume leaves the run as it was)
            summary.update(status=status, error=error, finished_at=runs.utc_now())
            try:
                runs.write_json(path / runs.SUMMARY, summary)
            except RunError as e:
                summary["status"] = "running"  # what the file still says
                return e
        return None

    def resumable() -> bool:
        # a resume that turned checkpoints off keeps the earlier checkpoint until its first epoch ends
        return cfg.train.checkpoint or (path / runs.CHECKPOINT).exists()

    def how_to_continue(once_fixed: bool = False) -> str:
        if not resumable():
            return "no checkpoint to continue from (train.checkpoint=false)"
        return f"{'once fixed, ' if once_fixed else ''}continue with: cnnlab train --resume {shell_word(path)}"

    def complete_but_unsaid(unwritten: RunError) -> RunError:
        """The error for a run whose every epoch is written but whose summary cannot say it is complete."""
        resume = f": once fixed, cnnlab train --resume {shell_word(path)} marks it so" if resumable() else ""
        return in_run(RunError(f"{unwritten}; every epoch is written, but {runs.SUMMARY} cannot say it is complete{resume}"), path)

    hold = contextlib.ExitStack()  # the run directory's training lock, from when it is known to the end
    made: Path | None = None  # the new run's directory, once made
    try:
        with signals.deferred():  # a signal waits until the directory holds a true summary
            if resume is not None:
                where = resume
                hold.enter_context(runs.training_lock(where))
                rows, summary, past_checkpoint = reopen(where, trained, state)
                check_epochs(where, cfg.train.epochs, state.epoch, summary)  # before config.yaml is rewritten
                if past_checkpoint:  # epochs past the checkpoint (see reopen): trained again,
                    drop_epochs_past(where, rows, state)  # so the run's files say what its checkpoint holds
                summary.update(epoch_numbers(rows))
            else:
                where = made = runs.new_run_dir(runs.runs_root(runs_dir), cfg.name)
                hold.enter_context(runs.training_lock(where))
                summary = {"started_at": runs.utc_now(), "train_seconds": 0.0}
            summary.update(
                name=cfg.name, kind="run", status="running", error=None, finished_at=None, dataset=cfg.dataset.name, model=cfg.model.name,
                params=count_params(model), seed=cfg.seed, epochs_planned=cfg.train.epochs, epochs=state.epoch,
                train_size=len(data.x_train), test_size=len(data.x_test),
                data_dir=str(resolve_data_dir(data_dir, cfg.dataset.data_dir).resolve()),  # where the files are, a link followed
                reported=cfg.reported.model_dump() if cfg.reported else None, **provenance(device),
            )
            compiled_before = summary.get("compile_seconds") or 0.0  # a resumed run's earlier sessions
            # this session's: set once its step is compiled, loaded or found crashed
            for key in ("compiled_step_cached", "compiled_step_crashed"):
                summary.pop(key, None)
            runs.atomic_write(where / runs.CONFIG, dump_yaml(config_to_dict(cfg)))
            runs.write_json(where / runs.SUMMARY, summary)
            path = where
            kept = state.epoch
            if cfg.train.tensorboard:
                log = hold.enter_context(contextlib.closing(tensorboard.EpochLog(where)))
        fit(
            state, data, pipeline, cfg.train, loss_fn, on_epoch=epoch_done,
            on_step=progress.step if progress is not None else None,
            on_epoch_start=progress.epoch_start if progress is not None else None,
        )
        # every epoch is written: a signal from here on waits until the summary says "completed"
        signals.critical = True
    except Interrupted as e:
        written = summary.get("epochs", state.epoch)  # fit counts an epoch (state.epoch) a moment before its files are written
        if path is not None and written == cfg.train.epochs:  # came as the last epoch's files were written
            unwritten = finish("completed")
            raise (stopped_when_complete(e.signum, path) if unwritten is None else complete_but_unsaid(unwritten)) from None
        message = f"stopped by {signal_name(e.signum)} during epoch {written + 1}"
        unwritten = finish("interrupted", message)
        if path is None:
            raise
        unsaid = f" ({runs.SUMMARY} still says running: {unwritten})" if unwritten is not None else ""
        raise in_run(Interrupted(e.signum, f"{message}; {written} complete epoch(s) kept; {how_to_continue()}{unsaid}"), path) from None
    except KeyboardInterrupt as e:  # (the epochs written, as above: state.epoch runs ahead of them a moment)
        finish("interrupted", f"stopped during epoch {summary.get('epochs', state.epoch) + 1}")
        raise in_run(e, path)
    except Stopped as e:
        finish("stopped", str(e) or None)
        return RunResult(path, summary, rows)
    except BaseException as e:
        finish("failed", first_line(e))
        if isinstance(e, RunError) and path is not None:  # a file of the run could not be written (a full disk)
            raise in_run(RunError(f"{e}; {kept} complete epoch(s) kept; {how_to_continue(once_fixed=True)}"), path) from None
        raise in_run(e, path)
    else:
        unwritten = finish("completed")
        if unwritten is not None:
            raise complete_but_unsaid(unwritten)
        if (signals.pending or signals.received) is not None:
            raise stopped_when_complete(signals.pending or signals.received, path)
    finally:
        hold.close()
        if made is not None and path is None:  # its first summary could not be written (a full disk): nothing
            shutil.rmtree(made, ignore_errors=True)  # there to list or resume, and no path was printed
    return RunResult(path, summary, rows)


def stopped_when_complete(signum: int, path: Path) -> Interrupted:
    """A signal that came once every epoch was written: the run is complete, and whatever runs it
    (a study, a script) still stops, as it was asked to."""
    return in_run(Interrupted(signum, f"stopped by {signal_name(signum)} after the last epoch; the run is complete: {path}"), path)

