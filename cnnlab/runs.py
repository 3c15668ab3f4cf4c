"""Run directories: create, write config/metrics/summary/checkpoints atomically, list and load.

A run lives in `runs/<UTC time>-<config name>-<short id>/` with config.yaml, metrics.csv,
summary.json, model.pt (state_dict) and checkpoint.pt (everything needed to resume).
Every file is written to a temp file in the same directory and renamed into place, so a kill at
any moment leaves either the old or the new complete file.
"""

from __future__ import annotations

import contextlib
import io
import json
import numbers
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnlab.errors import RunError, shell_word

CONFIG, METRICS, SUMMARY, MODEL, CHECKPOINT = "config.yaml", "metrics.csv", "summary.json", "model.pt", "checkpoint.pt"
LOCK = ".lock"  # held (flock) by the process training the run
LOCK_TRIES = 10  # 0.1 s apart, before a second process is told the run is being trained
# metrics.csv columns that `show`, `--resume` and the epoch tables rely on
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "samples_per_sec"]
# summary.json's results that a resumed study computes with, for its completed cells (check_types)
RESULTS = {**dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc", "train_seconds"), numbers.Real), "epochs": int, "params": int}


def runs_root(cli_value: str | os.PathLike | None = None) -> Path:
    """--runs-dir, else $CNNLAB_RUNS_DIR, else ./runs; refused when it is a file or a link to nothing,
    by every command alike."""
    root = Path(given_runs_dir(cli_value) or "runs")
    try:
        in_the_way = (root.exists() or root.is_symlink()) and not root.is_dir()
    except PermissionError as e:  # under a directory the user may not enter (a name too long is the CLI's: exit 2)
        raise RunError(f"cannot reach the runs directory {root}: {e.strerror or e}") from None
    if in_the_way:
        raise RunError(file_in_the_way(root, root))
    return root


def given_runs_dir(cli_value: str | os.PathLike | None = None) -> str | os.PathLike | None:
    """--runs-dir, else $CNNLAB_RUNS_DIR; None when neither is given."""
    return cli_value or os.environ.get("CNNLAB_RUNS_DIR") or None


def runs_to_list(cli_value: str | os.PathLike | None = None) -> Path:
    """runs_root for `cnnlab runs`: one given (--runs-dir, $CNNLAB_RUNS_DIR) must be a directory, so
    that a typo is not 'no runs'; the default ./runs need not exist yet (a fresh clone)."""
    root = runs_root(cli_value)
    if not root.exists() and given_runs_dir(cli_value):
        source = "" if cli_value else " ($CNNLAB_RUNS_DIR)"
        raise RunError(f"the runs directory {root}{source} does not exist")
    return root


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RunError(f"cannot write in {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:  # first: closes fd whatever fails below
            # mkstemp makes 0600 files; results are meant to be shared. A file replaced keeps its mode
            # (a results.csv made read-only or group-writable by hand)
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
            except OSError:
                mode = 0o644
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, quota, a directory removed under us
            raise RunError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def remove_stale_writes(folder: Path) -> None:
    """Remove the temp files atomic_write leaves in folder when its process is killed mid-write; only
    for a folder whose lock the caller holds (else they may be another process's writes in flight)."""
    for stale in Path(folder).glob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def load_tensors(path: Path, device="cpu"):
    """torch.load of a file of plain tensors (weights_only); one RunError line for anything else."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses anything but tensors and plain containers
        raise RunError(f"refusing to load {path}: not a plain file of tensors ({error_reason(e)})") from None
    except (KeyError, EOFError) as e:  # torch's reader on text or an empty file: 'KeyError: 101', 'EOFError'
        raise RunError(f"cannot read {path}: not a file torch.save wrote, or a damaged one ({type(e).__name__}: {error_reason(e)})") from None
    except Exception as e:  # truncated
        raise RunError(f"cannot read {path}: {error_reason(e)}") from None


def load_model_weights(model, run: Path, device="cpu"):
    """Load a run's model.pt into model; one RunError line for a missing, unreadable or mismatched file."""
    path = Path(run) / MODEL
    if not path.is_file():
        raise RunError(f"{run} has no {MODEL} yet (no epoch finished)")
    state = load_tensors(path, device)
    try:
        model.load_state_dict(state)
    except Exception as e:  # another model's weights (a different config or override)
        raise RunError(f"{path} does not fit this config's model: {error_reason(e)}") from None
    return model


def error_reason(e: Exception) -> str:
    """The line of a torch error that says what is wrong, not its generic first lines (which suggest
    weights_only=False, or name the state_dict's class)."""
    generic = ("Error(s) in loading", "Weights only load failed", "Check the doc", "Please file")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln for ln in lines if not ln.startswith(generic)), lines[0] if lines else type(e).__name__)


def ensure_dir(path: Path, what: str = "runs directory") -> Path:
    """Create path (and its parents) if needed; one RunError line when that fails or it is not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # path, or one of its parents, is a file
        raise RunError(file_in_the_way(path, nearest_existing(path), what)) from None
    except OSError as e:
        raise RunError(f"cannot create the {what} {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK):
        raise RunError(f"the {what} {path} is not writable")
    return path


def check_dir(path: Path, what: str = "runs directory") -> None:
    """What ensure_dir would refuse, found without creating anything: checked before a slow start
    (Ray) that would leave nothing behind if the directory then turned out impossible."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise RunError(file_in_the_way(path, existing, what))
    if not os.access(existing, os.W_OK):
        raise RunError(f"the {what} {path} is not writable" if existing == path else f"cannot create the {what} {path}: {existing} is not writable")


def nearest_existing(path: Path) -> Path:
    """path, or the nearest of its parents that exists, a broken link included ('.' at the latest)."""
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())


def file_in_the_way(path: Path, existing: Path, what: str = "runs directory") -> str:
    """What every command says when the directory `path` cannot be, because `existing` (path itself
    or one of its parents) is a file, or a link to nothing (a drive not mounted)."""
    kind = "a file" if existing.exists() else "a broken symbolic link"
    return f"{path} is {kind}, not a {what}" if existing == path else f"cannot create the {what} {path}: {existing} is {kind}"


RUN_DIR_NAME = re.compile(r"\d{8}-\d{6}-.+-[0-9a-f]{6}")  # what new_run_dir names a directory


def new_run_dir(root: Path, name: str, kind: str = "run") -> Path:
    """Make a fresh `<UTC time>-<name>-<id>` directory; two processes never get the same one."""
    ensure_dir(root)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = root / f"{stamp}-{name}-{secrets.token_hex(3)}"
        try:
            path.mkdir()  # atomic: fails if another process took the name
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(f"cannot create a run directory in {root}: {e.strerror or e}") from None
        if not os.access(path, os.W_OK):
            raise RunError(f"the runs directory {root} is not writable")
        atomic_write(path / ".kind", kind)
        return path
    raise RunError(f"could not find a free run directory name in {root}")


# the directories cnnlab makes, as a message names them (each is resumed by the command of its
# name, a run by train), and where a study or sweep keeps its runs
DIRECTORIES = {"run": "a run", "compare": "a compare study", "shift-sweep": "a shift-sweep study", "sweep": "a sweep"}
MEMBERS = {"compare": "cells", "shift-sweep": "cells", "sweep": "trials"}
STUDIES = ("compare", "shift-sweep")  # the studies (studies.record): their --resume refuses a completed one


def directory_kind(path: Path) -> str | None:
    """Which of DIRECTORIES path is, by its summary.json (a study's names the study); None when it
    is none of them, or its summary cannot be read."""
    return _kind_and_summary(path)[0]


def _kind_and_summary(path: Path) -> tuple[str | None, dict]:
    try:
        summary = read_json(path / SUMMARY)
    except RunError:
        return None, {}
    kind = summary.get("study") if summary.get("kind") == "study" else summary.get("kind", "run")  # an older cnnlab's run has none
    if kind == "run":
        return (kind if (path / CONFIG).is_file() else None), summary
    return (kind if isinstance(kind, str) and kind in DIRECTORIES else None), summary  # not a list edited in by hand


def resume_elsewhere(path: Path, wanted: str) -> None:
    """Refuse, naming the command that resumes it, a directory given to resume `wanted` (a key of
    DIRECTORIES) that is another kind: a study given to train --resume, a run to compare --resume.
    A completed study is refused as complete: its own --resume would only say so."""
    kind, summary = _kind_and_summary(path)
    if kind is None or kind == wanted:
        return
    what = f"{path} is {DIRECTORIES[kind]} directory, not {DIRECTORIES[wanted]}"
    # (a completed run can still be extended with more epochs; sweep --resume reports a completed sweep again)
    if kind in STUDIES and summary.get("status") == "completed":
        raise RunError(f"{what}, and it is already complete: nothing to resume")
    raise RunError(f"{what}: resume it with cnnlab {'train' if kind == 'run' else kind} --resume {shell_word(path)}")


def must_be_a_directory(path: Path, kind: str) -> None:
    """Refuse a path that is no directory at all, saying why: a file, or nothing there (a typo)."""
    if not path.is_dir():
        raise RunError(f"not {DIRECTORIES[kind]} directory: {path} {'is a file' if path.exists() else 'does not exist'}")


def open_run(path: str | os.PathLike, resuming: bool = False) -> Path:
    """A path that must be an existing run (config.yaml and summary.json inside). A study or sweep
    directory is told apart: resuming, with the command that resumes it; else, with where its runs are."""
    path = Path(path)
    if path.is_file() and path.name in (CONFIG, SUMMARY, METRICS, MODEL, CHECKPOINT):
        raise RunError(f"{path} is a file of a run: give its directory, {path.parent}")
    must_be_a_directory(path, "run")
    if not (path / CONFIG).is_file() or not (path / SUMMARY).is_file():
        if resuming:
            resume_elsewhere(path, "run")
        kind = directory_kind(path)
        if kind in MEMBERS:  # not resuming: a command that reads a run's model
            raise RunError(f"{path} is {DIRECTORIES[kind]} directory, not a run: give one of its runs, in {path / MEMBERS[kind]}")
        missing = " and ".join(name for name in (CONFIG, SUMMARY) if not (path / name).is_file())
        raise RunError(f"not a run directory: {path} has no {missing}")
    return path


def finished_run(path: str | os.PathLike, verb: str) -> Path:
    """open_run for a run whose model is used as trained: finished (completed, or stopped by a sweep's
    scheduler), as an interrupted, failed or still running one holds an earlier epoch's weights than
    its config says. verb: what is done with it (sweep)."""
    path = open_run(path)
    summary = read_json(path / SUMMARY)
    status = shown_status(summary, path)
    if status not in ("completed", "stopped"):
        then = "wait until it is done" if status == "running" else f"continue it with: cnnlab train --resume {shell_word(path)}"
        raise RunError(f"{path} is {status} after {summary.get('epochs') or 0} epoch(s): {verb} a finished run ({then})")
    return path


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def training_lock(run: Path):
    """Hold the run's lock while training it: a second process that would train the same run (two
    resumes at once) is refused instead of interleaving its writes with the first's."""
    import fcntl  # here, not above: Windows has none, and `cnnlab` there says in one line that it needs POSIX

    try:
        fd = os.open(Path(run) / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise RunError(f"cannot train in {run}: {e.strerror or e}") from None
    try:
        for attempt in range(LOCK_TRIES):  # `cnnlab runs` looks at the lock for an instant: wait that out
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < LOCK_TRIES - 1:
                    time.sleep(0.1)
        else:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunError(f"{run} is still being trained by {who}: stop it first, or wait") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the refusal above
        yield
    finally:
        os.close(fd)


def trained_data_dir(path: Path) -> str | None:
    """The data directory a run trained on, for its --resume: used while it still exists, so that a
    $CNNLAB_DATA_DIR set for other work does not swap the data under a resumed run, and the usual
    order (then $CNNLAB_DATA_DIR, then ./data) applies once it has moved."""
    return _existing_dir(read_json(Path(path) / SUMMARY).get("data_dir"))


def own_data_dir(path: Path, given, cfg, trained):
    """The data directory to read a run's own data from (its --resume, its forward-check --run): given
    (a --data-dir); else, unless an override moves cfg's dataset.data_dir from what the run trained
    with (trained: its stored config; a relative one would follow the cwd), trained_data_dir."""
    if given is None and cfg.dataset.data_dir in (None, trained.dataset.data_dir):
        return trained_data_dir(path)
    return given


def resumed_data_dir(given: Path | str | None, own: str | None, runs_dir: Path, configs) -> Path | str | None:
    """The data directory a resumed sweep or study reads, from any working directory: given (a
    --data-dir on the --resume); else its own --data-dir while that exists; else the one all the runs
    in runs_dir (its trials, its cells) read while it exists, so that the runs still to come read the
    files those that ran read (found as ./data where it started, through $CNNLAB_DATA_DIR, ...), as
    train --resume reads a run's own; else None: the usual order. That folder stands in only where all
    its configs (its cells', trials', models') find their data alike, by the same dataset.data_dir or
    none: else it would take the place of a config's own folder, or give its own to the others."""
    alike = len({cfg.dataset.data_dir for cfg in configs}) == 1
    return given or _existing_dir(own) or (_read_by_all(runs_dir) if alike else None)


def _read_by_all(runs_dir: Path) -> str | None:
    """The data directory every run in runs_dir recorded reading, while it exists; None where none
    ran or they read different ones (a cluster's nodes with data of their own)."""
    read = {trained_data_dir(summary.parent) for summary in Path(runs_dir).glob(f"*/{SUMMARY}")}
    return read.pop() if len(read) == 1 else None


def _existing_dir(recorded) -> str | None:
    return recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None


def read_text(path: Path) -> str:
    """A file's text; one RunError line when it cannot be read or is not text."""
    try:
        return Path(path).read_text()
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise RunError(f"cannot read {path}: {e}") from None


def read_json(path: Path, types: dict[str, type] | None = None) -> dict:
    """A JSON object (a run's summary); one RunError line for anything else (see check_types)."""
    text = read_text(path)
    if not text.strip():
        raise RunError(f"cannot read {path}: the file is empty")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise RunError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"cannot read {path}: not a JSON object but a {type(data).__name__}")
    return check_types(data, types or {}, path)


def check_types(data: dict, types: dict[str, type], path: Path) -> dict:
    """data, once each key of types it holds is of that type (or null): a file edited by hand is
    one RunError line naming the key, not a failure deep inside the command that reads it."""
    for key, kind in types.items():
        value = data.get(key)
        # true is an int to Python, not a number to a reader ("epochs": true showed as "True of 2000")
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            what = {dict: "mapping", list: "list", numbers.Real: "number", int: "whole number"}.get(kind, kind.__name__)
            raise RunError(f"cannot read {path}: {key!r} should be a {what}, not {value!r:.40} (edited by hand?)")
    return data


def write_table(path: Path, rows: list[dict]) -> None:
    atomic_write(path, csv_text(rows))


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """rows as CSV (columns: these, in this order); a column of whole numbers stays whole where some
    rows lack it (6422 and an empty cell, not the 6422.0 of the float column pandas makes for a
    missing value)."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=columns)
    for column in table.columns:
        given = [row[column] for row in rows if row.get(column) is not None]
        if given and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in given):
            table[column] = pd.array([row.get(column) for row in rows], dtype="Int64")
    return table.to_csv(index=False)


def read_metrics(run: Path):
    import pandas as pd

    path = Path(run) / METRICS
    if not path.is_file() or not path.stat().st_size:
        return pd.DataFrame()
    try:
        with warnings.catch_warnings():
            # rows that all hold a field more than the header: pandas would take the first column
            # for an index (every column then reads as its neighbour's), or with index_col=False
            # drop the last field with this warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise RunError(f"cannot read {path}: its rows hold more fields than its header (edited by hand?)") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:  # pandas' ParserError is a ValueError
        raise RunError(f"cannot read {path}: {error_reason(e)}") from None
    missing = [c for c in METRIC_COLUMNS if c not in table.columns]
    if missing:
        raise RunError(f"cannot read {path}: no {', '.join(repr(c) for c in missing)} column (a table cnnlab did not write?)")
    if table.empty:  # a header alone: no epoch finished (its columns are untyped, not text)
        return table
    text = [c for c in METRIC_COLUMNS if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])]
    if text:
        raise RunError(f"cannot read {path}: column {text[0]!r} holds something other than numbers (edited by hand?)")
    if not all(float(epoch).is_integer() for epoch in table["epoch"]):  # a blank one is NaN
        raise RunError(f"cannot read {path}: column 'epoch' holds something other than whole numbers (edited by hand?)")
    for row, epoch in enumerate(table["epoch"], start=1):  # cnnlab writes epochs 1, 2, ... one row each
        if epoch != row:
            raise RunError(f"cannot read {path}: row {row} is epoch {epoch:g}, not {row} (edited by hand?)")
    return table


def owner() -> dict:
    """The summary keys that let owner_alive tell a live directory from one whose process was killed."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_alive(summary: dict) -> bool | None:
    """Whether the process that wrote summary (its host and pid) still runs; None when unknowable.

    A process killed hard (kill -9, out of memory, power loss) never marks its run finished:
    this is how `cnnlab runs` tells such a run from one still in progress.
    """
    pid = summary.get("pid")
    if summary.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_held(run: Path) -> bool | None:
    """Whether a process holds the run's (study's, sweep's) training lock; None when it has no lock
    file (written by an older cnnlab)."""
    import fcntl

    try:
        fd = os.open(Path(run) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # closing the file below lets the lock go again
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


STATUSES = ("running", "completed", "failed", "interrupted", "stopped", "dead")  # stopped: by a sweep's scheduler; dead: marked running, process gone


def shown_status(summary: dict, path: Path | None = None) -> str | None:
    """summary's status, or 'dead' for a directory marked running whose process is gone: on this host
    its free training lock says so (a pid may be reused), else the pid when the summary has one."""
    status = summary.get("status")
    if status != "running":
        return status
    if path is not None and summary.get("host") in (None, socket.gethostname()):
        held = lock_held(path)
        if held is not None:
            return "running" if held else "dead"
    return "dead" if owner_alive(summary) is False else status


def settle(run_dir: Path, status: str, reason: str | None) -> None:
    """Make a run's summary.json say how it ended when the run's own process could not: Tune ends a
    stopped trial's worker right after the epoch it reported, and a stopped study or sweep its Ray
    workers, maybe before the run wrote its final status."""
    summary = read_json(Path(run_dir) / SUMMARY)
    if summary.get("status") != status:
        summary.update(status=status, error=reason, finished_at=summary.get("finished_at") or utc_now())
        write_json(Path(run_dir) / SUMMARY, summary)


OWNERS_GRACE = 5.0  # seconds a stopped study or sweep waits for workers still going down to let their runs go


def settle_cut_off(members: Path, reason: str, keep: frozenset[str] = frozenset(), grace: float = OWNERS_GRACE) -> None:
    """After a study or sweep stopped early, once Ray's workers are gone: its runs in `members` that
    still say 'running' (or 'stopped', but those named in keep) become 'interrupted' with the reason,
    or 'completed' where every planned epoch was written (as a run a signal reaches then says); a run
    directory (named as new_run_dir names one) killed as it was made, before its first summary.json,
    is removed: nothing trained there, `cnnlab runs` cannot list it, and a resume starts that run
    again elsewhere. Any other directory without a summary (a folder of the user's) is left alone,
    and so is a run whose training lock a live process still holds after `grace` seconds (a worker
    on a cluster, not gone with the driver's shutdown): that process settles it. The grace is for
    this machine's workers, which Ray's shutdown kills a moment later, unsettled."""
    dirs = [p for p in Path(members).iterdir() if p.is_dir() and p.name not in keep] if Path(members).is_dir() else []
    held = _still_held(dirs, grace)
    for path in dirs:
        if path in held:
            continue
        if _never_written(path):
            if RUN_DIR_NAME.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            summary = read_json(path / SUMMARY, {"epochs": int, "epochs_planned": int})
            every_epoch = summary.get("epochs") is not None and summary["epochs"] == summary.get("epochs_planned")
            if summary.get("status") == "running" and every_epoch:
                settle(path, "completed", None)
            elif summary.get("status") in ("running", "stopped"):
                settle(path, "interrupted", reason)
        except RunError:  # a summary edited by hand, a full disk: left as it is
            continue


def _still_held(dirs: list[Path], seconds: float) -> set[Path]:
    """The dirs whose training lock a process still holds after waiting up to `seconds` for it."""
    deadline = time.monotonic() + seconds
    held = [p for p in dirs if lock_held(p)]
    while held and time.monotonic() < deadline:
        time.sleep(0.1)
        held = [p for p in held if lock_held(p)]
    return set(held)


def _never_written(run: Path) -> bool:
    """Whether a run directory holds no summary.json and nothing else a run writes before it (the
    directory's .kind and .lock, config.yaml, an atomic write's temp file cut off by a kill)."""
    before_summary = {".kind", LOCK, CONFIG}
    return not (run / SUMMARY).exists() and all(
        f.name in before_summary or (f.name.startswith(".") and f.name.endswith(".tmp") and f.is_file()) for f in run.iterdir())


def _killed_as_it_started(path: Path) -> bool:
    """Whether path is a directory cnnlab made (its .kind, or named as it names one and holding only
    what comes before a summary) that has no summary.json, with no live process making it."""
    if not path.is_dir() or (path / SUMMARY).exists():
        return False
    ours = (path / ".kind").is_file() or (RUN_DIR_NAME.fullmatch(path.name) is not None and _never_written(path))
    return ours and not lock_held(path)


def _kind(path: Path) -> str:
    """What a directory's .kind says it is (run, study, sweep): 'run' without one (an older cnnlab's
    run), or when it cannot be read."""
    try:
        return (path / ".kind").read_text(errors="replace").strip()
    except OSError:
        return "run"


def list_runs(root: Path, unreadable: list[str] | None = None, unstarted: list[str] | None = None) -> list[dict]:
    """Summaries of every run, study and sweep under root, newest first.

    A run marked running whose process is gone shows as status 'dead'. unreadable, when given,
    gets the directories cnnlab made (a .kind file) whose summary.json cannot be read (edited or
    damaged by hand), and unstarted those it made that have none and no live process making them
    (killed outright as they started: nothing trained there); the list leaves both out.
    """
    out = []
    if not root.is_dir():
        return out
    try:
        paths = sorted(root.iterdir(), reverse=True)
    except OSError as e:
        raise RunError(f"cannot read the runs directory {root}: {e.strerror or e}") from None
    for path in paths:
        summary = path / SUMMARY
        try:
            if not path.is_dir() or not summary.is_file():
                if unstarted is not None and _killed_as_it_started(path):
                    unstarted.append(path.name)
                continue
        except OSError:  # a directory we may not look into (another user's): nothing to list
            continue
        try:
            data = read_json(summary)
        except RunError:  # a summary is always replaced whole: damaged by hand, or not cnnlab's
            if unreadable is not None and (path / ".kind").is_file():
                unreadable.append(path.name)
            continue
        data.setdefault("kind", _kind(path))
        data["status"] = shown_status(data, path)
        data["path"] = str(path)
        data["id"] = path.name
        out.append(data)
    # by when they started, not by name: a directory renamed by hand (best_lenet) sorted above them all;
    # those without a start time last, by name
    def started(d: dict) -> tuple:
        at = d.get("started_at")
        return (True, at, d["id"]) if isinstance(at, str) else (False, "", d["id"])

    return sorted(out, key=started, reverse=True)
