"""One run from a resolved config: data -> transforms -> model -> engine -> run directory.

`run()` is the single place a config becomes a trained model and a run directory; `cnnlab train`,
the studies and the sweeps all call it. It keeps summary.json's status true (running, completed,
failed, interrupted), writes a resumable checkpoint after every epoch and resumes from one.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import platform
import random
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import cnnlab
from cnnlab import runs, tensorboard
from cnnlab.config import Config, config_to_dict, dump_yaml, flatten, load_config
from cnnlab.data import load_splits, resolve_data_dir
from cnnlab.engine import Data, State, StepGraph, fit, loss_function, steps_per_epoch
from cnnlab.errors import ConfigError, RunError, first_line, signal_name
from cnnlab.flops import training_flops
from cnnlab.models import build_model, count_params
from cnnlab.transforms import Pipeline

DEFAULT_THREADS = torch.get_num_threads()  # torch's choice (the machine's cores), before any run changes it
SMALL_STEP_FLOPS = 1e7  # training FLOPs per step under which a run uses one CPU thread (cpu_threads)
DATA_INIT_IMAGES = 5000  # training images a model's init_from_data sees (fastnet's whitening)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stops cleanly; exit code 128 + signal number."""

    def __init__(self, signum: int, message: str | None = None):
        super().__init__(message or signal_name(signum))
        self.signum = signum

    @classmethod
    def of(cls, e: KeyboardInterrupt, what: str, then: str, received: int | None = None) -> "Interrupted":
        """An Interrupted for a study or sweep (`what`) that `e` stopped, saying `then` (how to go on).
        e may be a bare KeyboardInterrupt that Ray made of a signal: then the signal is the one our
        handler `received`, if it saw one, else unknown."""
        signum = getattr(e, "signum", None) or received
        return cls(signum or signal.SIGINT, f"{what} stopped by {signal_name(signum)}; {then}")


class Stopped(Exception):
    """Raised by an on_epoch callback to end the run after that epoch (a sweep's scheduler stopped
    the trial): the run returns normally with status 'stopped' and the message as its reason."""


@dataclass
class RunResult:
    path: Path
    summary: dict
    metrics: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------- building blocks
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device; use cpu or auto (--device cpu, or device: cpu in the config)")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
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


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(cnnlab.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def provenance(device: torch.device) -> dict:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cnnlab_version": cnnlab.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        **runs.owner(),
        "threads": torch.get_num_threads(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(cfg: Config, device: torch.device, data_dir=None):
    """Load both splits once, apply the deterministic transforms once, move them to the device."""
    train, test = load_splits(cfg, data_dir)
    n_train, n_test = cfg.dataset.train_subset, cfg.dataset.test_subset
    pipeline = Pipeline.for_split(cfg.transform, train, cfg.seed)
    memory = torch.channels_last if cfg.train.channels_last else torch.contiguous_format

    def put(images, labels, is_train):
        x = pipeline.prepare(images.to(device), train=is_train).contiguous(memory_format=memory)
        return x, labels.to(device)

    data = Data(*put(train.images[:n_train], train.labels[:n_train], True), *put(test.images[:n_test], test.labels[:n_test], False))
    return data, pipeline, train


# ---------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    *keys, version, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module behind torch.compile's wrapper, whose state_dict has the plain keys."""
    return getattr(model, "_orig_mod", model)


def checkpoint_of(state: State) -> dict:
    return {
        "epoch": state.epoch,
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "order_gen": state.order_gen.get_state(),
        "aug_gen": state.aug_gen.get_state(),
        "rng": _rng_state(),
    }


def load_checkpoint(path: Path, device: torch.device) -> dict:
    if not path.is_file():
        raise RunError(f"cannot resume: {path} does not exist (the run was trained with train.checkpoint=false)")
    return runs.load_tensors(path, device)


def set_aug_state(gen: torch.Generator, saved: torch.Tensor) -> None:
    """Restore the augmentation generator. A run resumed on another kind of device (CPU <-> CUDA,
    whose generators keep states of different sizes) gets a new stream seeded from the saved state,
    so the same checkpoint always continues the same way."""
    if saved.numel() == gen.get_state().numel():
        gen.set_state(saved)
    else:
        gen.manual_seed(int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little") >> 1)


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor its parameter's memory layout. A checkpoint keeps the layout
    it was trained in, and a resume may change train.channels_last: the fused optimizers walk a
    parameter and its state in memory order, so a state in the other layout would be read scrambled."""
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def restore(state: State, ckpt: dict, path: Path) -> None:
    try:
        unwrap(state.model).load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        match_layouts(state.optimizer)
        if state.scheduler is not None and ckpt["scheduler"] is not None:
            state.scheduler.load_state_dict(ckpt["scheduler"])
        state.order_gen.set_state(ckpt["order_gen"].cpu())
        set_aug_state(state.aug_gen, ckpt["aug_gen"].cpu())
        _set_rng_state(ckpt["rng"])
        state.epoch = int(ckpt["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # e.g. a model override that changes shapes
        raise RunError(f"cannot resume from {path}: it does not fit this config ({type(e).__name__}: {runs.error_reason(e)})") from None


# what a resume may change: how the run trains and where its data is, not what it trains on or how it learns
RESUMABLE_CHANGES = (
    "train.epochs", "train.eval_batch_size", "train.amp", "train.compile", "train.cuda_graphs", "train.deterministic", "train.threads", "train.channels_last",
    "train.checkpoint", "train.tensorboard", "device", "dataset.data_dir", "dataset.download", "reported", "description",
)


def check_resume_changes(path: Path, trained: Config, cfg: Config) -> None:
    """Refuse a resume whose overrides change what the run trains on or how it learns (data, seed,
    transforms, model, optimizer, schedule, loss, batch size, ...): its epochs so far and the new
    ones would make one curve of two experiments, under a config.yaml that describes only the second."""
    old, new = flatten(config_to_dict(trained)), flatten(config_to_dict(cfg))
    changed = [
        k for k in dict.fromkeys([*old, *new])
        if old.get(k) != new.get(k) and not any(k == a or k.startswith(a + ".") for a in RESUMABLE_CHANGES)
    ]
    if changed:
        raise RunError(
            f"cannot resume {path} with another {', '.join(changed)}: its epochs so far were trained without it; "
            "train a new run (a resume may change train.epochs, where the data is, and how steps run: device, amp, threads, ...)"
        )


def reopen(path: Path, trained: Config, state: State, device: torch.device, cfg: Config) -> tuple[list[dict], dict, bool]:
    """Restore state from the checkpoint of the run at path, trained with `trained` (its config.yaml,
    read before it is rewritten) and resumed with cfg: (metrics rows kept, summary, whether
    metrics.csv holds epochs past the checkpoint).
    The caller holds the run's training lock, so no other process trains it meanwhile."""
    summary = runs.read_json(path / runs.SUMMARY)
    for stale in path.glob(".*.tmp"):  # left by a process killed in the middle of a write
        stale.unlink(missing_ok=True)
    previous = runs.read_metrics(path)
    # The table is written before the checkpoint, so a write that failed in between (a full disk)
    # leaves rows past the checkpoint: they are dropped below. With no checkpoint at all, start afresh.
    if (path / runs.CHECKPOINT).exists() or (len(previous) and not trained.train.checkpoint):
        restore(state, load_checkpoint(path / runs.CHECKPOINT, device), path)
    rows = [r for r in previous.to_dict("records") if r["epoch"] <= state.epoch]
    return rows, summary, len(rows) < len(previous)


def epoch_numbers(rows: list[dict]) -> dict:
    """summary.json's numbers from the epochs in rows: the last one's, the best test accuracy and the
    training time (None and 0 before the first epoch)."""
    last = rows[-1] if rows else {}
    return {
        **{k: last.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "best_test_acc": max((r["test_acc"] for r in rows), default=None),
        "train_seconds": sum(r["epoch_seconds"] for r in rows),
    }


def drop_epochs_past(path: Path, rows: list[dict], state: State) -> None:
    """Rewrite metrics.csv and model.pt of the run at path for the epochs it keeps (rows, state)."""
    if rows:
        runs.write_table(path / runs.METRICS, rows)
        runs.atomic_torch_save(unwrap(state.model).state_dict(), path / runs.MODEL)
    else:
        (path / runs.METRICS).unlink(missing_ok=True)
        (path / runs.MODEL).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- signals
class _Signals:
    """Turn SIGINT/SIGTERM into Interrupted, but never in the middle of writing an epoch's files."""

    def __init__(self):
        self.pending: int | None = None
        self.critical = False
        self.received: int | None = None

    def handler(self, signum, frame):
        self.received = signum  # kept: Tune, for one, catches what we raise and returns
        if self.critical:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def deferred(self):
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
            if self.pending is not None:
                raise Interrupted(self.pending)


def interruptible():
    """While in this block SIGINT and SIGTERM raise Interrupted (carrying the signal), for work
    around runs such as a study's; run() installs its own handler while it trains."""
    return _Signals().installed()


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


def setup(cfg: Config, device: torch.device, data_dir=None, cpu_share: int | None = None) -> tuple[Data, Pipeline, State, Callable]:
    """What a run trains with, from cfg alone: threads (within cpu_share, the cores it may use),
    seeds, prepared data, the model (channels-last, compiled when asked), optimizer, schedule,
    generators and loss. `cnnlab bench` shares it."""
    seed_everything(cfg.seed)
    data, pipeline, train_split = prepare_data(cfg, device, data_dir)
    input_shape = tuple(train_split.images.shape[1:])
    model = build_model(cfg.model, input_shape, len(train_split.classes)).to(device)
    if hasattr(model, "init_from_data"):  # fastnet's whitening filters come from the training images
        model.init_from_data(pipeline.as_trained(data.x_train[:DATA_INIT_IMAGES]))
    torch.set_num_threads(cpu_threads(cfg, model, input_shape, cpu_share))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    spe = steps_per_epoch(len(data.x_train), cfg.train.batch_size, cfg.train.max_steps)
    loss_fn = loss_function(cfg.loss.name, cfg.loss.label_smoothing)
    state = State(
        model=torch.compile(model) if cfg.train.compile else model,
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
    return data, pipeline, state, loss_fn


def replays_steps(cfg: Config, device: torch.device) -> bool:
    """Whether a run of cfg on device replays its steps as a CUDA graph (train.cuda_graphs)."""
    return device.type == "cuda" and cfg.train.cuda_graphs and not cfg.train.compile


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> tuple[Path, Config]:
    path = runs.open_run(run_dir)
    return path, load_config(path / runs.CONFIG, overrides, stored=True)


def run(
    cfg: Config,
    *,
    runs_dir=None,
    data_dir=None,
    resume: str | Path | None = None,
    progress=None,
    on_epoch=None,
    cpu_share: int | None = None,
) -> RunResult:
    """Train cfg in a new run directory under runs_dir (or continue the run at `resume`), on at most
    cpu_share CPU threads when the config does not set train.threads (default: all cores).

    SIGINT and SIGTERM raise Interrupted from the first line: before the run directory exists
    nothing is lost; after, the run is marked interrupted and keeps its last complete epoch.
    """
    signals = _Signals()
    with signals.installed():
        return _run(cfg, signals, runs_dir, data_dir, resume, progress, on_epoch, cpu_share)


def _run(cfg: Config, signals: _Signals, runs_dir, data_dir, resume, progress, on_epoch, cpu_share) -> RunResult:
    device = resolve_device(cfg.device)
    if resume is not None:
        resume = runs.open_run(resume)
        trained = load_config(resume / runs.CONFIG, stored=True)  # the config the run trained with
        check_resume_changes(resume, trained, cfg)
        # the data it trained on, unless an override moves it (a relative dataset.data_dir would follow the cwd)
        if data_dir is None and cfg.dataset.data_dir in (None, trained.dataset.data_dir):
            data_dir = runs.trained_data_dir(resume)
    if cfg.train.tensorboard:
        tensorboard.require()
    data, pipeline, state, loss_fn = setup(cfg, device, data_dir, cpu_share)
    model = unwrap(state.model)
    path: Path | None = None  # set once the run directory holds a true summary
    log: tensorboard.EpochLog | None = None  # the TensorBoard log, when asked for
    rows: list[dict] = []
    summary: dict = {}

    def epoch_done(row: dict, st: State) -> None:
        with signals.deferred():
            rows.append(row)
            summary.update(epochs=st.epoch, **epoch_numbers(rows))
            runs.write_table(path / runs.METRICS, rows)
            runs.atomic_torch_save(unwrap(st.model).state_dict(), path / runs.MODEL)
            if cfg.train.checkpoint:
                runs.atomic_torch_save(checkpoint_of(st), path / runs.CHECKPOINT)
            else:  # an older one (a resume that turned checkpoints off) would bring back earlier epochs
                (path / runs.CHECKPOINT).unlink(missing_ok=True)
            runs.write_json(path / runs.SUMMARY, summary)
        if log is not None:
            log.epoch(row)
        if progress is not None:
            progress.epoch_end(row)
        if on_epoch is not None:
            on_epoch(row, path)

    def finish(status: str, error: str | None = None) -> None:
        signals.critical = True  # a second Ctrl-C must not cut this last write short
        if path is not None:  # else nothing was written (a refused resume leaves the run as it was)
            summary.update(status=status, error=error, finished_at=runs.utc_now())
            runs.write_json(path / runs.SUMMARY, summary)

    hold = contextlib.ExitStack()  # the run directory's training lock, from when it is known to the end
    try:
        with signals.deferred():  # a signal waits until the directory holds a true summary
            if resume is not None:
                where = resume
                hold.enter_context(runs.training_lock(where))
                rows, summary, past_checkpoint = reopen(where, trained, state, device, cfg)
                if cfg.train.epochs < state.epoch:  # refused before config.yaml is rewritten
                    raise RunError(
                        f"{where} already has {state.epoch} epochs; train.epochs={cfg.train.epochs} would not undo them: "
                        f"ask for more (train.epochs={state.epoch + 1} or higher) or train a new run"
                    )
                if cfg.train.epochs == state.epoch and summary.get("status") == "completed":  # its files stay as they are
                    raise RunError(f"{where} is already complete ({state.epoch} epochs): nothing to train; extend it with train.epochs={state.epoch + 1} or more")
                if past_checkpoint:  # epochs past the checkpoint (see reopen): trained again,
                    drop_epochs_past(where, rows, state)  # so the run's files say what its checkpoint holds
                summary.update(epoch_numbers(rows))
            else:
                where = runs.new_run_dir(runs.runs_root(runs_dir), cfg.name)
                hold.enter_context(runs.training_lock(where))
                summary = {"started_at": runs.utc_now(), "train_seconds": 0.0}
            summary.update(
                name=cfg.name, kind="run", status="running", error=None, dataset=cfg.dataset.name, model=cfg.model.name,
                params=count_params(model), seed=cfg.seed, epochs_planned=cfg.train.epochs, epochs=state.epoch,
                train_size=len(data.x_train), test_size=len(data.x_test),
                data_dir=str(resolve_data_dir(data_dir, cfg.dataset.data_dir)),
                reported=cfg.reported.model_dump() if cfg.reported else None, **provenance(device),
            )
            runs.atomic_write(where / runs.CONFIG, dump_yaml(config_to_dict(cfg)))
            runs.write_json(where / runs.SUMMARY, summary)
            path = where
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
        # fit counts an epoch (state.epoch) a moment before its files are written; before the run
        # directory holds a summary (path None) there is none to read
        written = summary.get("epochs", state.epoch) if path is not None else state.epoch
        if path is not None and written == cfg.train.epochs:  # came as the last epoch's files were written
            finish("completed")
            raise stopped_when_complete(e.signum, path) from None
        message = f"stopped by {signal_name(e.signum)} during epoch {written + 1}"
        finish("interrupted", message)
        if path is None:
            raise
        # a resume that turned checkpoints off keeps the earlier checkpoint until its first epoch ends
        resumable = cfg.train.checkpoint or (path / runs.CHECKPOINT).exists()
        how = f"continue with: cnnlab train --resume {path}" if resumable else "no checkpoint to continue from (train.checkpoint=false)"
        raise Interrupted(e.signum, f"{message}; {written} complete epoch(s) kept; {how}") from None
    except KeyboardInterrupt:
        finish("interrupted", f"stopped during epoch {state.epoch + 1}")
        raise
    except Stopped as e:
        finish("stopped", str(e) or None)
        return RunResult(path, summary, rows)
    except BaseException as e:
        finish("failed", first_line(e))
        raise
    else:
        finish("completed")
        if signals.pending is not None:
            raise stopped_when_complete(signals.pending, path)
    finally:
        hold.close()
    return RunResult(path, summary, rows)


def stopped_when_complete(signum: int, path: Path) -> Interrupted:
    """A signal that came once every epoch was written: the run is complete, and whatever runs it
    (a study, a script) still stops, as it was asked to."""
    return Interrupted(signum, f"stopped by {signal_name(signum)} after the last epoch; the run is complete: {path}")
