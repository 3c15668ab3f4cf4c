"""Resuming a run: the checkpoint written after each epoch, and how a run's state and files are
restored to it (which overrides a resume may change: cnnlab.resumable)."""

from __future__ import annotations

import hashlib
import numbers
import random
from pathlib import Path

import numpy as np
import torch

from cnnlab import runs
from cnnlab.config import Config
from cnnlab.engine import State
from cnnlab.errors import RunError, counted
from cnnlab.models import unwrap


def _cuda_index(device: torch.device) -> int | None:
    """The GPU a device names ('cuda': the current one); None for the CPU."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        # reading them would start CUDA in a run that never did (the CPU's, on a GPU machine), whose
        # CUDA streams are still as seed_everything seeded them, as a resume seeds them again
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "cuda_device": _cuda_index(device),  # the GPU whose stream the run drew its dropout masks from
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    # one state per GPU the run's machine had: a machine with fewer (none, or fewer visible) sets those it has
    for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, index)
    # a run resumed on another GPU (trained on cuda:1, resumed on cuda:0) goes on with the stream it
    # trained with, not with the resuming GPU's own, untouched since the seed
    trained, resumed = state.get("cuda_device"), _cuda_index(device)
    if trained is not None and resumed is not None and trained != resumed and trained < len(state["cuda"]):
        torch.cuda.set_rng_state(state["cuda"][trained], resumed)
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    *keys, version, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))


def checkpoint_of(state: State) -> dict:
    return {
        "epoch": state.epoch,
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "order_gen": state.order_gen.get_state(),
        "aug_gen": state.aug_gen.get_state(),
        "rng": _rng_state(state.aug_gen.device),
    }


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's tensors on the CPU: torch's RNG states must be CPU tensors to be set again (a
    CUDA run's, mapped to its device, were refused), and load_state_dict copies the weights and
    the optimizer's state to their parameters' device."""
    return runs.load_tensors(path, "cpu")


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
            follow_schedule(state.scheduler)
        state.order_gen.set_state(ckpt["order_gen"])
        set_aug_state(state.aug_gen, ckpt["aug_gen"])
        _set_rng_state(ckpt["rng"], state.aug_gen.device)
        state.epoch = checkpoint_epoch(ckpt, path)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:  # e.g. a model override that changes shapes
        raise does_not_fit(path, e) from None


def follow_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's rate to the schedule's at the step the scheduler reached. Loading a state
    keeps the rates the optimizer saved: those of the run's old length, so an extended run under a
    length-dependent schedule (cosine, onecycle) took its first new step at the old schedule's last
    rate (0 by default) before the stretched one took over. An unchanged length gives the same rates."""
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr() gives


def checkpoint_epoch(ckpt: dict, path: Path) -> int:
    """The number of epochs the checkpoint ckpt, of the run at path, was written after."""
    try:
        epoch = ckpt["epoch"]
    except (KeyError, TypeError) as e:  # a file edited by hand
        raise does_not_fit(path, e) from None
    if isinstance(epoch, bool) or not isinstance(epoch, int):  # 2.7 was taken as 2 (cnnlab writes whole numbers)
        raise RunError(f"cannot resume from {path}: its checkpoint says epoch {epoch!r}, not a whole number (edited by hand?)")
    if epoch < 0:
        raise RunError(f"cannot resume from {path}: its checkpoint says epoch {epoch} (edited by hand?)")
    return epoch


def does_not_fit(path: Path, e: Exception) -> RunError:
    return RunError(f"cannot resume from {path}: it does not fit this config ({type(e).__name__}: {runs.error_reason(e)})")


def check_epochs(path: Path, epochs: int, done: int, summary: dict) -> None:
    """Refuse a resume of the run at path (summary: its summary.json), `done` epochs into its
    training, whose train.epochs would undo epochs, or add none to a completed run."""
    if epochs < done:
        raise RunError(
            f"{path} already has {done} epochs; train.epochs={epochs} would not undo them: "
            f"ask for more (train.epochs={done + 1} or higher) or train a new run"
        )
    if epochs == done and summary.get("status") == "completed":  # its files stay as they are
        raise RunError(f"{path} is already complete ({counted(done, 'epoch')}): nothing to train; extend it with train.epochs={done + 1} or more")


def check_resume(path: Path, trained: Config, cfg: Config) -> None:
    """Refuse, without training or changing a file, what a resume of the run at path (trained: its
    stored config) with cfg refuses from its files (cnnlab train --resume, --print-config too); what
    it refuses of cfg's changes, resumable.check_resume_changes, the CLI asks first, before torch loads."""
    ckpt = checkpoint_to_continue(path, trained, len(runs.read_metrics(path)))
    done = checkpoint_epoch(ckpt, path) if ckpt is not None else 0
    check_epochs(path, cfg.train.epochs, done, runs.read_json(path / runs.SUMMARY))


def checkpoint_to_continue(path: Path, trained: Config, epochs: int) -> dict | None:
    """The checkpoint a resume of the run at path (trained with `trained`; epochs: the rows metrics.csv
    holds) continues from, or None: with no checkpoint written yet it starts afresh. A run whose first
    checkpoint write failed (a full disk) has one epoch at most; with more, its checkpoint was removed,
    and a fresh start would drop them all."""
    checkpoint = path / runs.CHECKPOINT
    if checkpoint.exists():
        return load_checkpoint(checkpoint)
    if epochs and not trained.train.checkpoint:
        raise RunError(f"cannot resume: {checkpoint} does not exist (the run was trained with train.checkpoint=false)")
    if epochs > 1:
        raise RunError(f"cannot resume: {checkpoint} does not exist, though {runs.METRICS} holds {epochs} epochs (removed?): nothing to continue them from; train a new run")
    return None


def reopen(path: Path, trained: Config, state: State) -> tuple[list[dict], dict, bool]:
    """Restore state from the checkpoint of the run at path, trained with `trained` (its config.yaml,
    read before it is rewritten): (metrics rows kept, summary, whether metrics.csv holds epochs past
    the checkpoint).
    The caller holds the run's training lock, so no other process trains it meanwhile."""
    summary = runs.check_types(runs.read_json(path / runs.SUMMARY), {"compile_seconds": numbers.Real}, path / runs.SUMMARY)
    runs.remove_stale_writes(path)
    previous = runs.read_metrics(path)
    # The table is written before the checkpoint, so a write that failed in between (a full disk)
    # leaves rows past the checkpoint: they are dropped below. With no checkpoint at all, start afresh.
    ckpt = checkpoint_to_continue(path, trained, len(previous))
    if ckpt is not None:
        restore(state, ckpt, path)
    rows = [r for r in previous.to_dict("records") if r["epoch"] <= state.epoch]
    if len(rows) < state.epoch:  # a resume would write the next epoch after a gap
        raise RunError(f"cannot resume {path}: {runs.METRICS} has {len(rows)} epoch(s) but the checkpoint is at epoch {state.epoch} (edited by hand?)")
    return rows, summary, len(rows) < len(previous)


def drop_epochs_past(path: Path, rows: list[dict], state: State) -> None:
    """Rewrite metrics.csv and model.pt of the run at path for the epochs it keeps (rows, state)."""
    if rows:
        runs.write_table(path / runs.METRICS, rows)
        runs.atomic_torch_save(unwrap(state.model).state_dict(), path / runs.MODEL)
    else:
        (path / runs.METRICS).unlink(missing_ok=True)
        (path / runs.MODEL).unlink(missing_ok=True)
