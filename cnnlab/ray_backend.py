"""Ray: start it here or join a cluster, run study cells as Ray tasks, run a sweep's trials on Tune.

Without an address Ray starts on this machine with all its cores (no dashboard, quiet logs);
`--address auto`, `--address HOST:PORT` or $RAY_ADDRESS join a running cluster. A sweep trial is
an ordinary cnnlab run in <sweep>/trials/ that reports each epoch to Tune through run()'s on_epoch
callback, so a scheduler (ASHA) can stop it. A trial that is retried (its node died) or resumed
(--resume) continues its own run directory from the last complete epoch, so it ends with the same
numbers as if nothing had happened. Every trial and cell records the node that ran it.

Import this module only where Ray is wanted: cnnlab works without the `ray` extra.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab import runs
from cnnlab.errors import CnnlabError, ConfigError, RunError, counted, first_line
from cnnlab.interrupts import STOP_SIGNALS

INSTALL = "pip install 'cnnlab[ray]'"


def require_ray(what: str, optuna: bool = False) -> None:
    """One line saying how to install Ray when it (or Tune, or Optuna for tpe/random) is missing."""
    try:
        import ray  # noqa: F401
        import ray.tune  # noqa: F401  (needs pandas, pyarrow, fsspec: the ray[tune] extra)

        if optuna:
            import optuna  # noqa: F401
    except ImportError as e:
        raise CnnlabError(f"{what} needs Ray, which is missing here ({e.name or e}); install it with: {INSTALL}") from None


def check_reachable(address: str) -> None:
    """Fail in one line at once when the address is none Ray takes, when nothing listens at HOST:PORT
    (ray.init would retry for minutes), or when `auto` finds no cluster on this machine; before a
    study's or sweep's directory exists."""
    if address == "auto":
        address = _cluster_here()
    if address in ("local", "auto") or "://" in address:
        return  # Ray here, a client address (ray://, a provider's), 'auto' unresolved: Ray's own checks answer quickly
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")  # IPv6: [::1]:6379
    host = host[1:-1] if bracketed else host
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536) or (":" in host and not bracketed):
        raise RunError(f"{address!r} is not a Ray cluster address: give HOST:PORT (the head's, 6379 by default; [IPv6]:PORT), ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RunError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


def ray_address(address: str | None) -> str:
    """The cluster a session joins: --address, else $RAY_ADDRESS, else 'local' (Ray on this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _cluster_here() -> str:
    """The HOST:PORT that `auto` stands for: the cluster `ray start` last started on this machine."""
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # a Ray without it: ray.init's own check answers
        return "auto"
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as e:  # none or several found; Ray's advice names its CLI's `--address` flag
        found = first_line(e).split(" Please specify")[0].rstrip(".")
        raise RunError(f"cannot reach a Ray cluster at auto: {found}; name one with --address HOST:PORT "
                       "(ray start --head starts one here)") from None


@contextlib.contextmanager
def session(address: str | None, what: str = "--address"):
    """Ray for the length of a block: here (address None or 'local', unless $RAY_ADDRESS names a
    cluster) with every core, else the cluster at 'auto' or HOST:PORT."""
    require_ray(what)
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the working directory: relative paths hold
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune prints no tables of its own
    address = ray_address(address)
    check_reachable(address)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    # ray.init installs its own SIGTERM handler (it aborts the process); a study's, which marks the
    # study interrupted, must stay in charge
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS} if threading.current_thread() is threading.main_thread() else {}
    try:
        if address == "local":
            # a local instance stays on the loopback interface
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        # a listening cluster that refuses us is most often one with token authentication, which
        # `ray start` turns on by default since Ray 2.59, while a driver's ray.init does not
        auth = "" if os.environ.get("RAY_AUTH_MODE") else (
            "; if the cluster uses token authentication (ray start's default since Ray 2.59), "
            "set RAY_AUTH_MODE=token and its token (ray get-auth-token) here too")
        raise RunError(f"cannot reach a Ray cluster at {address}: {first_line(e)}{auth}") from None
    finally:
        for s, handler in handlers.items():
            if handler is not None:
                signal.signal(s, handler)
    try:
        yield ray
    finally:
        ray.shutdown()


def node_info() -> dict:
    """Which node runs this Ray task or trial: its short id (unique in the cluster), IP and host."""
    import ray

    return {"node": ray.get_runtime_context().get_node_id()[:8], "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}


def _where(node: dict) -> str:
    return f"on node {node['node_ip']} {node['node']}"


def _gpus(have: dict, wanted) -> float:
    """'auto': one GPU per trial or cell when the cluster (its resources `have`) has GPUs, else none."""
    if wanted == "auto":
        return 1.0 if have.get("GPU", 0) > 0 else 0.0
    return float(wanted)


def local_resources() -> dict:
    """What a local Ray has: session() gives it every core, and it finds the GPUs torch sees."""
    import torch

    return {"CPU": os.cpu_count(), "GPU": torch.cuda.device_count()}


def check_fits(resources, have: dict, local: bool = False) -> float:
    """The GPUs each trial asks for; refuse trials larger than the cluster's total (`have`): Tune
    would wait for them forever. local: `have` is this machine's, checked before Ray starts."""
    gpus = _gpus(have, resources.gpus)
    where, fix = ("this machine", "run the sweep on a Ray cluster (--address)") if local else ("the Ray cluster", "add nodes")
    for name, wanted in (("CPU", resources.cpus), ("GPU", gpus)):
        if wanted > have.get(name, 0):
            raise ConfigError(
                f"each trial asks for {counted(wanted, name)} (resources.{name.lower()}s) but {where} has "
                f"{have.get(name, 0):g}; lower resources.{name.lower()}s or {fix}"
            )
    return gpus


def _absolute(path) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


# ---------------------------------------------------------------------------- study cells as Ray tasks
def _run_cell(cfg, runs_dir: str, data_dir: str | None, resume: str | None = None):
    from cnnlab.experiment import run
    from cnnlab.runner import finished_result

    node = node_info()
    try:
        # a retry (its node died) after the resumed run had completed takes it as it is
        result = (finished_result(Path(resume)) if resume is not None else None) or run(cfg, runs_dir=runs_dir, data_dir=data_dir, resume=resume)
    except CnnlabError as e:
        raise type(e)(f"{e} ({_where(node)})") from None
    return with_node(result, node)


def with_node(result, node: dict):
    """result, its run's own summary.json naming the node that ran it (a study's cell, a sweep's trial)."""
    result.summary.update(node)
    runs.write_json(result.path / runs.SUMMARY, result.summary)
    return result


def run_cells_on_ray(cells: list, *, runs_dir: Path, data_dir=None, address: str | None = None, on_done: Callable | None = None, resume: list | None = None) -> list:
    """Each cell a Ray task (one CPU, a GPU where the cluster has them, retried if its node dies);
    the RunResults come back in the cells' order, each summary naming its node. resume: each
    cell's earlier run to continue, or None."""
    resume = resume or [None] * len(cells)
    with session(address) as ray:
        task = ray.remote(_run_cell).options(num_cpus=1, num_gpus=_gpus(ray.cluster_resources(), "auto"), max_retries=3)
        pending = {task.remote(cell.cfg, _absolute(runs_dir), _absolute(data_dir), _absolute(r)): i for i, (cell, r) in enumerate(zip(cells, resume))}
        results: list = [None] * len(cells)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, CnnlabError):
                    raise e.cause from None
                raise
            except ray.exceptions.RayError as e:  # the task's worker or node died more often than retried
                raise RunError(f"cell {i + 1} of {len(cells)} was lost on the cluster: {first_line(e)}") from None
            if on_done is not None:
                on_done(cells[i], results[i])
        return results


# ---------------------------------------------------------------------------- sweeps on Ray Tune
@dataclass
class Job:
    """What every trial needs besides its own parameters (sent once to the cluster)."""

    sweep: object  # cnnlab.sweep.Sweep
    trials_dir: str
    data_dir: str | None
    threads: int


def param_space(sweep, tune) -> dict:
    """Tune's search space. A grid is a list of points crossed with the seeds; random and tpe draw
    each key (a list's index, or a number from the range) and Repeater runs each draw once per seed."""
    if sweep.spec.method == "grid":
        return {"point": tune.grid_search(list(range(len(sweep.points)))), "seed": tune.grid_search(sweep.spec.seeds)}
    space = {}
    for key, e in sweep.spec.space.items():
        if e.values is not None:
            space[key] = tune.choice(list(range(len(e.values))))
        elif e.integer:
            space[key] = (tune.lograndint if e.log else tune.randint)(round(e.low), round(e.high) + 1)
        else:
            space[key] = (tune.loguniform if e.log else tune.uniform)(e.low, e.high)
    return space


def decode(sweep, params: dict) -> tuple[int, dict, int]:
    """(point index, point, seed) of a trial's Tune parameters."""
    if sweep.spec.method == "grid":
        return params["point"], sweep.points[params["point"]], params["seed"]
    point = {}
    for key, e in sweep.spec.space.items():
        v = params[key]
        point[key] = e.values[v] if e.values is not None else (round(v) if e.integer else v)
    return -1, point, sweep.spec.seeds[params.get("__trial_index__", 0)]


def _run_to_continue(trials_dir: Path, name: str) -> Path | None:
    """This trial's latest earlier run if it can be taken or continued (see runner.continuable): one
    trained with train.checkpoint: false and cut off after some epochs cannot, and the trial starts
    again in a new run directory, as a study's cell does."""
    from cnnlab.runner import continuable
    from cnnlab.sweep import latest_run

    previous = latest_run(trials_dir, name)
    return previous if previous is not None and continuable(previous) else None


def check_restorable(sweep_dir: Path) -> None:
    """RunError, before anything is written, where Tune saved no state to resume the sweep from."""
    from ray import tune

    from cnnlab.sweep import tune_saved_state

    if not (tune.Tuner.can_restore(str(Path(sweep_dir).resolve() / "tune")) and tune_saved_state(sweep_dir)):
        raise RunError(f"nothing to resume in {sweep_dir}: Tune saved no state there; start the sweep again")


def _trial(params: dict, job: Job) -> None:
    """One trial: an ordinary cnnlab run that reports every epoch to Tune."""
    from ray import tune

    from cnnlab.experiment import Stopped, run
    from cnnlab.sweep import latest_run, stop_reason, trial_run_name

    sweep = job.sweep
    _, point, seed = decode(sweep, params)
    node = node_info()
    trial_id = tune.get_context().get_trial_id()
    try:
        cfg = sweep.trial_config(point, seed, trial_run_name(sweep, trial_id))
    except CnnlabError as e:  # keys drawn together (random, tpe) that make no config: one line, not retried
        tune.report({sweep.metric: math.nan, "epoch": 0, "epochs_planned": 0, "error": f"{e} ({_where(node)})", **node})
        return
    planned = cfg.train.epochs

    ended = []  # Tune ended the trial inside report(): the thread must then exit, not return
    ran_on = dict(node)  # the node the reported epochs ran on

    def report(row: dict, path: Path) -> None:
        try:
            tune.report({**row, "epochs_planned": planned, "run_dir": str(path), **ran_on})
        except SystemExit:  # how Tune ends a trial its scheduler stopped, or every trial of an ending sweep
            ended.append(row["epoch"])
            if row["epoch"] < planned:
                raise Stopped(stop_reason(sweep, row["epoch"])) from None

    try:
        previous = _run_to_continue(Path(job.trials_dir), cfg.name)
        stored = runs.read_json(previous / runs.SUMMARY) if previous is not None else {}
        done = stored.get("status") == "completed"
        if done and all(isinstance(stored.get(k), str) for k in node):  # replayed here, run elsewhere: its node
            ran_on = {k: stored[k] for k in node}
        if previous is not None:  # Tune saw these epochs before: tell it again, then continue
            for row in runs.read_metrics(previous).to_dict("records"):
                report(row, previous)
        if not done:  # a run that finished before the sweep was interrupted keeps its files as they are
            with_node(run(cfg, runs_dir=job.trials_dir, data_dir=job.data_dir, resume=previous, on_epoch=report, cpu_share=job.threads), node)
    except Stopped as e:  # while telling Tune the earlier epochs (run() handles its own)
        runs.settle(previous, "stopped", str(e))
    except CnnlabError as e:  # bad data on this node, a diverged loss, ...: the trial fails with one line, not retried
        made = latest_run(Path(job.trials_dir), cfg.name)  # the run it made before failing (a NaN loss), if any
        tune.report({sweep.metric: math.nan, "epoch": 0, "epochs_planned": planned, "error": f"{e} ({_where(node)})",
                     **({"run_dir": str(made)} if made else {}), **node})
    if ended:
        sys.exit(0)  # returning would make Tune's session wait for a next report forever


def ray_error(error: BaseException) -> str:
    """One line for an exception a trial raised, as Ray hands it over: the trial's own exception where
    Ray wraps it (a RayTaskError's cause), without the terminal colours Ray puts in its text."""
    cause = getattr(error, "cause", None)
    text = first_line(cause if isinstance(cause, BaseException) else error)
    return re.sub(r"\x1b\[[0-9;]*m", "", text).removeprefix("ray::")


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _record(sweep, result) -> dict:
    """What the sweep keeps of a Tune trial: its point, seed, run directory, node and how it ended."""
    m = result.metrics or {}
    index, point, seed = decode(sweep, result.config)
    error = m.get("error") or (ray_error(result.error) if result.error else None)
    if error:
        status = "failed"
    elif m.get("done"):  # Tune sets it when its scheduler stops a trial or the trial returns, not when it cuts one off
        status = "stopped" if m.get("epoch", 0) < m.get("epochs_planned", 0) else "completed"
    else:
        status = "unfinished"
    return {"trial_id": m.get("trial_id") or Path(result.path).name, "index": index, "point": point, "seed": seed,
            "status": status, "error": error, "run_dir": m.get("run_dir"), "node": m.get("node"), "node_ip": m.get("node_ip")}


def _progress(tune, sweep):
    """A Tune callback that prints one line per finished trial (plain print: Tune pickles it)."""
    from cnnlab.sweep import metric_text, show

    class Progress(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trials, trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trials, trial)

        def _line(self, trials, trial):
            m = trial.last_result or {}
            _, point, seed = decode(sweep, trial.config)
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial) + 1  # an error's is already ERROR
            what = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={show(v)}" for k, v in point.items())
            value = m.get(sweep.metric)
            where = f"on {m.get('node_ip', '?')} {m.get('node', '')}".rstrip()
            if m.get("error"):
                outcome = f"failed: {m['error']}"  # which names its node
            elif value is None:
                outcome = f"failed: see the Ray logs {where}"
            else:
                outcome = f"{sweep.metric} {metric_text(sweep.metric, value)} after {m.get('epoch')} epoch(s) {where}"
            print(f"[{min(done, sweep.n_trials)}/{sweep.n_trials}] {what} seed {seed}: {outcome}", flush=True)

    return Progress()


@contextlib.contextmanager
def noting_tunes_sigint(signals):
    """Around Tuner.fit(), which installs Tune's own SIGINT handler: a Ctrl-C then ends the sweep
    gracefully and fit() returns, Tune's handler having put back ours (signals') without saying which
    signal it took. So ours back afterwards is a SIGINT, kept in signals.received as our handler
    would (Tune takes SIGUSR1 the same way: sent by hand, it too is named SIGINT). Tune's handler,
    still in place when no signal came, is replaced by ours: it would swallow a Ctrl-C while the
    results are written."""
    ours = signal.getsignal(signal.SIGINT)
    if ours is signal.SIG_IGN:  # started ignoring Ctrl-C (a job a script put in the background): so must Tune
        previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # where Tune installs its handler (tune.tune._setup_signal_catching)
    tune_takes_sigint = threading.current_thread() is threading.main_thread() and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    try:
        yield
    finally:
        if ours is signal.SIG_IGN:
            if previous is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous
        if tune_takes_sigint:
            if signal.getsignal(signal.SIGINT) == ours:  # Tune took a Ctrl-C
                signals.received = signals.received or signal.SIGINT
            else:
                signal.signal(signal.SIGINT, ours)


def run_sweep(sweep, sweep_dir: Path, *, signals, data_dir=None, resume: bool = False) -> list[dict]:
    """Run (or, with resume, continue) the sweep's trials on Tune, inside a session(): one record
    per trial Tune knows of. A Ctrl-C that Tune takes is kept in signals.received."""
    import ray
    from ray import tune

    from cnnlab.sweep import TRIALS

    sweep_dir = Path(sweep_dir).resolve()
    trials_dir = sweep_dir / TRIALS
    trials_dir.mkdir(exist_ok=True)
    res = sweep.spec.resources
    gpus = check_fits(res, ray.cluster_resources())
    job = Job(sweep, str(trials_dir), _absolute(data_dir), max(1, int(res.cpus)))
    trainable = tune.with_resources(tune.with_parameters(_trial, job=job), {"cpu": res.cpus, "gpu": gpus})
    tune_dir = sweep_dir / "tune"
    if resume:  # (check_restorable: done by the caller before it marks the sweep running)
        tuner = tune.Tuner.restore(str(tune_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep, tune),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, search_alg=_searcher(sweep), scheduler=_scheduler(sweep),
                num_samples=1 if sweep.spec.method == "grid" else sweep.n_trials,
                max_concurrent_trials=sweep.spec.max_concurrent, trial_dirname_creator=_trial_dirname,
                reuse_actors=True,  # one worker process runs trial after trial: torch is imported once
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(sweep_dir), verbose=0, callbacks=[_progress(tune, sweep)],
                failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
            ),
        )
    with noting_tunes_sigint(signals):
        results = tuner.fit()
    return _records(sweep, results)


def _records(sweep, results) -> list[dict]:
    # an interrupted random or TPE sweep also returns trials its searcher never filled in: no config, no run
    return [_record(sweep, r) for r in results if r.config]


def saved_records(sweep, sweep_dir: Path) -> list[dict]:
    """Tune's records as it last saved them (every 10 s or so, and as a Ctrl-C ends the sweep), for a
    sweep that a signal cut short inside run_sweep: what --resume continues from. Empty if Tune saved none."""
    from ray import tune

    try:
        return _records(sweep, tune.ResultGrid(tune.ExperimentAnalysis(str(Path(sweep_dir).resolve() / "tune"))))
    except Exception:  # nothing saved yet, or a state cut short by the signal: the records only refine the statuses
        return []


def _searcher(sweep):
    if sweep.spec.method == "grid":
        return None  # Tune's grid search
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed, samples = sweep.spec.seeds[0], sweep.spec.samples
    if sweep.spec.method == "tpe":  # random draws first, then TPE's model of the good region
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, samples // 2)))
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    return Repeater(OptunaSearch(sampler=sampler), repeat=len(sweep.spec.seeds), set_index=True)


def _scheduler(sweep):
    s = sweep.spec.scheduler
    if s is None:
        return None
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        """ASHA that, as a resumed sweep adds back the trials that had ended, learns again what each
        reported at its rungs, from its run's metrics.csv: Tune saves no scheduler state, and without
        them a resumed sweep's remaining trials ran on where an uninterrupted sweep stops them."""

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            from cnnlab.sweep import trial_dir

            recorded = (trial.last_result or {}).get("run_dir") if trial.status == Trial.TERMINATED else None
            experiment = getattr(trial, "remote_experiment_path", None)  # <sweep dir>/tune, where it is now
            run_dir = trial_dir(Path(experiment).parent, recorded) if experiment and recorded else recorded
            if run_dir and (Path(run_dir) / runs.METRICS).is_file():
                for row in runs.read_metrics(Path(run_dir)).to_dict("records"):
                    self.on_trial_result(tune_controller, trial, row)

    # stop_last_trials=False: a trial that reaches its last epoch ends by itself, writing its final status
    return ResumableASHA(time_attr="epoch", max_t=sweep.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor, stop_last_trials=False)
