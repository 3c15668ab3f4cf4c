"""`cnnlab sweep`: a hyper-parameter sweep on Ray Tune, here or on a cluster; `--resume` continues one.

The sweep file is validated before Ray is imported; ray, torch and pandas load inside the command.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli import CnnlabUsage, DataDir, Device, RunsDir, app, not_empty, split_args, tell_finished
from cnnlab.errors import RunError, counted, in_run, shell_word, signal_name


def _check_local_ray(sweep, data_dir, resumed: bool) -> None:
    """What a sweep on a local Ray asks of this machine: its trials' devices, dataset files and subsets
    (else trials fail) and their cores and GPUs (else Tune waits forever), before anything is written.
    A resumed sweep's subsets are not checked: which trials start afresh is not known before Tune
    restores it, and a continued one trains as an earlier cnnlab accepted it (see load_splits)."""
    from cnnlab.ray_backend import check_fits, local_resources
    from cnnlab.runner import check_here

    check_fits(sweep.spec.resources, local_resources(), local=True)
    check_here(sweep.configs, data_dir, new=[] if resumed else None)


@app.command()
def sweep(
    args: list[str] = typer.Argument(None, metavar="SWEEP_FILE [KEY=VALUE]...", help="A sweep file (or its name, e.g. lenet-lr) and overrides: sweep keys (seeds=[0], method=tpe, space.optimizer.lr=[0.1,0.5]) or base-config keys (train.epochs=2)."),
    resume: Optional[Path] = typer.Option(None, "--resume", parser=not_empty("--resume", Path), metavar="SWEEP_DIR", help="Continue the interrupted sweep in SWEEP_DIR; finished trials are not run again."),
    address: Optional[str] = typer.Option(None, "--address", parser=not_empty("--address"), help="Ray cluster: auto | HOST:PORT. Default: $RAY_ADDRESS, else Ray on this machine with all its cores."),
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
    device: Optional[str] = Device,
):
    """Run every trial of a sweep (an ordinary run each) on Ray Tune; print the points best first.

    Writes trials/, trials.csv, results.csv/.md, best.yaml and a figure; the last line is the sweep
    directory (also when the sweep is interrupted or fails once it exists).
    """
    from cnnlab import sweep as sweeps
    from cnnlab.runs import SUMMARY, check_dir, owner, read_json, resumed_data_dir, runs_root, training_lock

    if resume is not None:
        if args or device is not None or runs_dir is not None:
            raise CnnlabUsage("--resume takes the sweep from SWEEP_DIR and goes on there: give no SWEEP_FILE, KEY=VALUE, --device or --runs-dir")
        spec = sweeps.reopen(resume)
    else:
        file, overrides = split_args(args or [])
        if file is None:
            raise CnnlabUsage("missing SWEEP_FILE: a sweep file or the name of one, e.g. cnnlab sweep lenet-lr (cnnlab configs lists them)")
        spec = sweeps.load_sweep(file, overrides + ([f"device={device}"] if device is not None else []))
        check_dir(runs_root(runs_dir))  # before Ray starts (seconds), or connects to a cluster

    from cnnlab.interrupts import Interrupted, interruptible
    from cnnlab.ray_backend import check_fits, check_restorable, ray_address, require_ray, run_sweep, saved_records, session
    from cnnlab.report import print_table

    require_ray("cnnlab sweep", optuna=spec.spec.method != "grid")
    with contextlib.ExitStack() as hold:  # the sweep directory's lock: one process runs a sweep at a time
        signals = hold.enter_context(interruptible())  # SIGTERM and SIGHUP stop the sweep like Ctrl-C: marked interrupted, resumable
        if resume is not None:
            hold.enter_context(training_lock(Path(resume)))
            data_dir = resumed_data_dir(data_dir, read_json(Path(resume) / SUMMARY).get("data_dir"), Path(resume) / sweeps.TRIALS, spec.configs)
        if ray_address(address) == "local":  # a cluster's nodes have their own devices and data
            _check_local_ray(spec, data_dir, resumed=resume is not None)
        path = stopped_by = None  # path: the sweep directory, once its summary says running
        try:
            with session(address, "cnnlab sweep") as ray:  # connect first: no sweep directory for an unreachable cluster
                check_fits(spec.spec.resources, ray.cluster_resources())  # nor for trials larger than the cluster
                if resume is not None:
                    check_restorable(Path(resume))  # else a refused resume would mark a completed sweep failed
                    sweeps.update_summary(Path(resume), status="running", error=None, finished_at=None, **owner())
                    path = Path(resume)
                else:
                    path = sweeps.start(spec, runs_root(runs_dir), data_dir)
                    hold.enter_context(training_lock(path))
                print(f"{spec.name}: {spec.describe()}\nsweep directory: {path}", flush=True)
                try:
                    records = run_sweep(spec, path, signals=signals, data_dir=data_dir, resume=resume is not None)
                except KeyboardInterrupt as e:  # also Interrupted (interrupts.STOP_SIGNALS); marked before Ray shuts down
                    stopped_by = sweeps.mark_interrupted(path, e, signals.received)
        except KeyboardInterrupt as e:  # also one as Ray shuts down (a second Ctrl-C), the results not written yet
            if path is None:
                raise
            stopped_by = stopped_by or sweeps.mark_interrupted(path, e, signals.received)
        except BaseException as e:
            if path is not None:
                sweeps.mark_failed(path, e)
            raise in_run(e, path)  # the sweep directory, once there is one, printed last
        if stopped_by is not None:  # Ray's workers are gone now: none rewrites a trial's status after this
            sweeps.settle_interrupted(path, saved_records(spec, path))
            raise stopped_by from None
        outcome = sweeps.finish(spec, path, records, signals.received)

    def tell() -> None:
        if outcome.points:
            print_table(sweeps.display_rows(spec, outcome.points), title=f"{spec.name}: {spec.metric}, best first")
        if outcome.best:
            point = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in outcome.best["point"].items())
            print(f"best: {point}; train it with: cnnlab train {shell_word(path / 'best.yaml')}")

    tell_finished(path, "sweep", tell, complete=outcome.status == "completed" and not outcome.failed)
    if outcome.status == "interrupted":
        done = sum(t["status"] in sweeps.DONE for t in outcome.trials)
        trials = f"{done} of {counted(spec.n_trials, 'trial')}"
        # 'interrupted: ...' and exit 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, as when the signal reaches cnnlab itself
        raise Interrupted(signals.received or signal.SIGINT, f"sweep stopped by {signal_name(signals.received)} after {trials}; {sweeps.resume_hint(path)}")
    if outcome.failed:
        raise RunError(f"{len(outcome.failed)} of {counted(spec.n_trials, 'trial')} failed; the first: {outcome.failed[0]['error']}")
