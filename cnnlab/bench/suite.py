"""The benchmark: the tutorials' loop against cnnlab's engine on the same config, interleaved.

For each case both sides start from the same config and seed (so the same initial weights), train
for the same budget, then evaluate on the same test images. Repeats alternate the two sides
(reference, cnnlab, cnnlab, reference, ...) so that drift in the machine's load hits both, and use
seeds seed, seed+1, ...; the speed-up is the median of the per-pair ratios. cnnlab's achieved
GFLOP/s (FLOPs per training sample counted from the layers, see cnnlab.flops) is compared with a
large matrix product (float32, or bf16 when cnnlab trains in bf16) timed in the same process with
the same number of threads.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cnnlab.bench import reference
from cnnlab.bench.cases import CASES, COMPUTE_BOUND, CONFIGS_DIR, Case, check_cases
from cnnlab.bench.machine import PeakMemory, Stretch, compute_peaks, load_average, machine_info, was_busy
from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES, Config, load_config
from cnnlab.data import load_splits
from cnnlab.engine import fit, loss_function, steps_per_epoch
from cnnlab.errors import ConfigError
from cnnlab.experiment import build_optimizer, build_scheduler, replays_steps, resolve_device, seed_everything, setup
from cnnlab.flops import training_flops
from cnnlab.models import build_model

QUICK_TEST_SUBSET = 2000


@dataclass
class Side:
    """One side's measurements over the repeats."""

    seconds: list[float] = field(default_factory=list)  # per epoch, or to the target
    acc: list[float] = field(default_factory=list)  # test accuracy at the end of the budget
    epochs: list[int] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    setup_seconds: list[float] = field(default_factory=list)
    compile_seconds: list[float] = field(default_factory=list)  # cnnlab on the CPU with --compile: kept out of `seconds`
    samples: list[int] = field(default_factory=list)  # training samples in `seconds`
    budget: str = ""  # what `seconds` buys: "1 epoch", "60 steps", "to 99.0%"
    threads: int = 0  # torch threads it trained with
    memory: str = ""  # how peak_mib was measured (PeakMemory.kind of its runs)


class _Reached(Exception):
    """Stops fit() once a time-to-accuracy case reaches its target."""


def case_config(
    case: Case, device: str, quick: bool = False, data_dir=None, compile: bool = False, amp: str | None = None,
    threads: int | None = None, cuda_graphs: bool = True,
) -> Config:
    """The case's config file with the bench's overrides: device, step budget, --quick's steps (its
    test subset: quick_test_subset, once the data is checked), cnnlab's options."""
    path = CONFIGS_DIR / case.config
    if not path.is_file():
        raise ConfigError(f"bench case {case.name!r} needs {path}, which this copy of cnnlab lacks; reinstall cnnlab")
    if device == "auto":  # decided now, so that auto on a GPU gets CUDA's bf16 default below
        device = resolve_device(device).type
    steps = min(case.steps or case.quick_steps, case.quick_steps) if quick else case.steps
    overrides = [*case.overrides, f"device={device}", "train.checkpoint=false"]
    if steps:
        overrides.append(f"train.max_steps={steps}")
    if compile:
        overrides.append("train.compile=true")
    if not cuda_graphs:
        overrides.append("train.cuda_graphs=false")
    # cnnlab's side only (the tutorials train in float32): bf16 autocast by default on CUDA
    overrides.append(f"train.amp={amp or ('bf16' if device.startswith('cuda') else 'none')}")
    if threads:
        overrides.append(f"train.threads={threads}")
    cfg = load_config(path, overrides)
    if data_dir is not None:
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"data_dir": str(data_dir)})})
    return cfg


def quick_test_subset(cfg: Config) -> Config:
    """cfg evaluated on the first QUICK_TEST_SUBSET test images, or on all of a smaller test split."""
    _, test = load_splits(cfg)  # read once: the measurements reuse the cached splits
    subset = min(QUICK_TEST_SUBSET, len(test.labels))
    return cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"test_subset": subset})})


def _reached(case: Case, acc: float) -> bool:
    """Whether a time-to-accuracy case stops after an epoch that ended at this accuracy."""
    return case.target is not None and acc >= case.target


def run_reference(case: Case, cfg: Config, device: torch.device, side: Side) -> None:
    """The tutorial's loop for cfg: its own datasets, model, optimizer and per-batch scheduler."""
    gc.collect()
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        train_set, test_set = reference.datasets_for(cfg)
        seed_everything(cfg.seed)
        model = build_model(reference.as_written(cfg.model), DATASET_SHAPES[cfg.dataset.name], DATASET_CLASSES[cfg.dataset.name])
        model = model.to(device)
        optimizer = build_optimizer(cfg, model, fused=False)  # the tutorials: the default
        scheduler = build_scheduler(cfg, optimizer, steps_per_epoch(len(train_set), cfg.train.batch_size, cfg.train.max_steps))
        model, loss_fn = reference.with_written_loss(model, cfg, loss_function(cfg.loss.name, cfg.loss.label_smoothing))
        train_loader, test_loader = reference.loaders(train_set, test_set, cfg)
        setup_s = time.perf_counter() - t0
        side.threads = torch.get_num_threads()
        seconds, acc, epoch = 0.0, float("nan"), 0
        for epoch in range(1, cfg.train.epochs + 1):
            seconds += reference.train_epoch(model, optimizer, scheduler, train_loader, loss_fn, device, cfg.train.max_steps)
            acc = reference.test(model, test_loader, device)
            if _reached(case, acc):
                break
    _record(side, case, cfg, len(train_set), seconds, acc, epoch, mem, setup_s)


def run_cnnlab(case: Case, cfg: Config, device: torch.device, side: Side) -> None:
    """cnnlab's own path: setup() (what `cnnlab train` runs) and the engine's fit()."""
    gc.collect()
    # process-wide settings cnnlab's setup() makes must not leak into the reference's runs
    threads, deterministic = torch.get_num_threads(), torch.backends.cudnn.deterministic
    rows: list[dict] = []

    def on_epoch(row, state):
        rows.append(row)
        if _reached(case, row["test_acc"]):
            raise _Reached

    try:
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            data, pipeline, state, loss_fn = setup(cfg, device)
            setup_s = time.perf_counter() - t0
            side.threads = torch.get_num_threads()
            try:
                fit(state, data, pipeline, cfg.train, loss_fn, on_epoch=on_epoch)
            except _Reached:
                pass
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic = deterministic
    seconds = sum(r["epoch_seconds"] for r in rows)
    if state.compiled_step is not None:  # a one-time cost like the setup's, so kept apart like it
        seconds -= state.compiled_step.compile_seconds
        side.compile_seconds.append(state.compiled_step.compile_seconds)
    _record(side, case, cfg, len(data.x_train), seconds, rows[-1]["test_acc"], len(rows), mem, setup_s)


def _record(side: Side, case: Case, cfg: Config, n_train: int, seconds, acc, epochs, mem: PeakMemory, setup_s) -> None:
    """Add one run's numbers; a time-to-accuracy run that missed its target has no time (NaN)."""
    bs, steps = cfg.train.batch_size, steps_per_epoch(n_train, cfg.train.batch_size, cfg.train.max_steps)
    if case.target is not None:
        side.budget = f"to {case.target:.1%}"
    else:
        side.budget = "1 epoch" if steps == steps_per_epoch(n_train, bs, None) else f"{steps} steps"
        seconds /= max(epochs, 1)
    reached = case.target is None or acc >= case.target
    side.seconds.append(seconds if reached else float("nan"))
    side.acc.append(acc)
    side.epochs.append(epochs)
    side.peak_mib.append(mem.mib)
    side.memory = mem.kind
    side.setup_seconds.append(setup_s)
    side.samples.append(min(steps * bs, n_train) * (epochs if case.target is not None else 1))


def _median(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return statistics.median(good) if good else float("nan")


def _timed(side: Side, values: list) -> list:
    """values of the repeats that have a time (a time-to-accuracy case: those that reached it)."""
    return [v for s, v in zip(side.seconds, values) if s == s]


def _epochs(side: Side) -> float:
    """Median epochs of the repeats that have a time, like the seconds, or of all when none has: the
    N of "not reached in N"."""
    return statistics.median(_timed(side, side.epochs) or side.epochs)


def summarize(case: Case, cfg: Config, ref: Side, ours: Side, quick: bool, peaks: dict[int, float], flops: int, memory_kind: str) -> dict:
    """One result row: medians over the repeats, per-pair speed-ups, agreement, FLOP/s, bound."""
    peak = peaks.get(ours.threads) or max(peaks.values())
    ratios = [r / c for r, c in zip(ref.seconds, ours.seconds) if r == r and c == c and c > 0]
    tolerance = max(case.tolerance, case.quick_tolerance) if quick else case.tolerance
    ref_acc, our_acc = _median(ref.acc), _median(ours.acc)
    seconds = _median(ours.seconds)
    samples = _median(_timed(ours, ours.samples))  # the repeats the seconds are of
    gflops = flops * samples / seconds / 1e9 if seconds == seconds and seconds > 0 else float("nan")
    return {
        "case": case.name,
        "config": case.config,
        "model": cfg.model.name,
        "batch_size": cfg.train.batch_size,
        "budget": ours.budget,
        "repeats": len(ours.seconds),
        "ref_seconds": _median(ref.seconds),
        "cnnlab_seconds": seconds,
        "speedup": statistics.median(ratios) if ratios else float("nan"),
        "speedup_min": min(ratios, default=float("nan")),
        "speedup_max": max(ratios, default=float("nan")),
        "ref_acc": ref_acc,
        "cnnlab_acc": our_acc,
        "acc_tolerance": tolerance,
        "agree": abs(ref_acc - our_acc) <= tolerance,
        "ref_epochs": _epochs(ref),
        "cnnlab_epochs": _epochs(ours),
        "ref_setup_seconds": _median(ref.setup_seconds),
        "cnnlab_setup_seconds": _median(ours.setup_seconds),
        "cnnlab_compile_seconds": _median(ours.compile_seconds) if ours.compile_seconds else None,
        "ref_threads": ref.threads,
        "cnnlab_threads": ours.threads,
        "ref_peak_mib": max(ref.peak_mib),
        "cnnlab_peak_mib": max(ours.peak_mib),
        "memory": memory_kind,
        "flops_per_sample": flops,
        "gflops": gflops,
        "peak_gflops_used": peak,  # the compute peak with the threads cnnlab trained with
        "fraction_of_peak": gflops / peak,
        "bound": None if gflops != gflops else "compute" if gflops / peak >= COMPUTE_BOUND else "overhead",
        "amp": cfg.train.amp,
        "compile": cfg.train.compile,
        "cuda_graphs": replays_steps(cfg, torch.device(cfg.device)),
        "channels_last": cfg.train.channels_last,
    }


@dataclass(frozen=True)
class Plan:
    """A bench checked before anything is measured or written: its cases' configs and the device."""

    cases: list[Case]
    configs: list[Config]
    device: torch.device
    quick: bool
    threads: int | None  # --threads: both sides' torch threads


def plan_bench(
    case_names: list[str],
    *,
    device: str = "cpu",
    quick: bool = False,
    compile: bool = False,
    amp: str | None = None,
    threads: int | None = None,
    cuda_graphs: bool = True,
    data_dir=None,
) -> Plan:
    """Everything about a bench that can be refused, refused now: unknown cases, a target --quick
    never reaches, the device, every case's data files. ConfigError or DataError.

    threads: torch threads for both sides (default: torch's choice for the reference, the config's
    train.threads for cnnlab). amp: cnnlab's autocast (default: bf16 on CUDA, none on the CPU).
    """
    check_cases(case_names, quick)
    configs = [case_config(CASES[n], device, quick, data_dir, compile, amp, threads, cuda_graphs) for n in case_names]
    dev = resolve_device(device, "--device")  # after the configs: their schema has refused an unknown device name
    for cfg in configs:  # every case's files before the first measurement, not after minutes of it
        reference.check_data(cfg)
    if quick:
        configs = [quick_test_subset(cfg) for cfg in configs]
    return Plan([CASES[n] for n in case_names], configs, dev, quick, threads)


def measure(plan: Plan, repeats: int = 3, on_row: Callable[[dict, dict], None] | None = None) -> tuple[list[dict], dict]:
    """Measure every case of plan; returns (result rows, machine and run info). on_row(row, info) is
    called as each case is measured, with the info so far (load_after: after that case; busy: whether
    other work ran beside the bench, which makes its ratios unreliable)."""
    configs, dev, threads = plan.configs, plan.device, plan.threads
    amp_dtype = torch.bfloat16 if configs and configs[0].train.amp == "bf16" else torch.float32
    info = machine_info(dev)
    info["load_before"] = load_average()
    bench = Stretch()
    # the machine's limit: all cores, and --threads' count, which cnnlab's side trains with; the same
    # sizes with --quick, since smaller kernels reach less of the peak and would put cases above 100% of it
    kernels = compute_peaks(dev, n=8192 if dev.type == "cuda" else 2048, dtype=amp_dtype, threads=(threads,) if threads else ())
    peaks = {t: max(by_kernel.values()) for t, by_kernel in kernels.items()}
    default_threads = torch.get_num_threads()
    all_cores = 0 if dev.type == "cuda" else default_threads
    widest = kernels[all_cores]  # (under load they may show less)
    info["peak_gflops"] = peaks[all_cores]
    info["peak_kernel"] = max(widest, key=widest.get)
    info["matmul_gflops"] = widest["matrix product"]
    info["peak_gflops_1_thread"] = peaks.get(1)
    info["peak_dtype"] = str(amp_dtype).replace("torch.", "")
    rows = []
    try:
        if threads:
            torch.set_num_threads(threads)
        for case, cfg in zip(plan.cases, configs):
            rows.append(measure_case(case, cfg, dev, repeats, plan.quick, peaks))
            _note_load(info, bench)
            if on_row is not None:
                on_row(rows[-1], info)
    finally:
        torch.set_num_threads(default_threads)
    _note_load(info, bench)  # a bench of no case has them, too
    return rows, info


def _note_load(info: dict, bench: Stretch) -> None:
    """info's load after the bench so far, its own share, the other work beside it, and whether the
    machine was busy."""
    info["load_after"] = load_average()
    info["bench_seconds"] = bench.seconds()
    info["bench_load"] = bench.own() / info["bench_seconds"]  # its threads' CPU seconds per second
    info["others_load"] = bench.others()
    info["busy"] = was_busy(info["cores"], info["load_before"], info["others_load"])


def measure_case(case: Case, cfg: Config, dev: torch.device, repeats: int, quick: bool, peaks: dict[int, float]) -> dict:
    """Interleaved repeats of both sides on seeds seed, seed+1, ...; one summary row."""
    shape = DATASET_SHAPES[cfg.dataset.name]
    flops = training_flops(build_model(cfg.model, shape, DATASET_CLASSES[cfg.dataset.name]), shape)
    ref, ours = Side(), Side()
    for r in range(repeats):
        cfg_r = cfg.model_copy(update={"seed": cfg.seed + r})
        sides = [(run_reference, ref), (run_cnnlab, ours)]
        for fn, side in sides if r % 2 == 0 else sides[::-1]:
            fn(case, cfg_r, dev, side)
    return summarize(case, cfg, ref, ours, quick, peaks, flops, ours.memory or ref.memory)
