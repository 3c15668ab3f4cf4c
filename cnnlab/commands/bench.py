"""`cnnlab bench`: the tutorials' loop against cnnlab's engine, and cnnlab against the machine's peak."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cnnlab.cli import CnnlabUsage, DataDir, RunsDir, app, device_name

RESULTS = "results.csv"


def _pct(value: float) -> str:
    return "-" if value != value else f"{value:.2%}"


def _secs(value: float) -> str:
    if value != value:
        return "not reached"
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"  # a --quick case can take milliseconds


def _took(value: float) -> str:
    return _secs(value) if value != value else f"{_secs(value)} s"


def _load(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _epochs_to_target(seconds: float, epochs: float) -> str:
    return f"{epochs:g}" if seconds == seconds else f"not reached in {epochs:g}"


def speed_row(r: dict) -> dict:
    """A result row as the speed table shows it; with a compile column when cnnlab's whole step was
    compiled (its seconds are kept out of cnnlab's)."""
    speedup = "-" if r["speedup"] != r["speedup"] else f"{r['speedup']:.1f}x ({r['speedup_min']:.1f}-{r['speedup_max']:.1f})"
    compiled = r.get("cnnlab_compile_seconds")
    return {
        "case": r["case"],
        "budget": r["budget"],
        "reference s": _secs(r["ref_seconds"]),
        "cnnlab s": _secs(r["cnnlab_seconds"]),
        **({} if compiled is None else {"cnnlab compile s": _secs(compiled)}),
        "speed-up (min-max)": speedup,
        "test acc ref / cnnlab": f"{_pct(r['ref_acc'])} / {_pct(r['cnnlab_acc'])}",
        "agree": f"{'yes' if r['agree'] else 'NO'} (±{r['acc_tolerance']:.1%})",
        "threads ref / cnnlab": f"{r['ref_threads']} / {r['cnnlab_threads']}",
        "peak MiB ref / cnnlab": f"{r['ref_peak_mib']:.0f} / {r['cnnlab_peak_mib']:.0f}",
    }


def peak_title(info: dict, rows: list[dict]) -> str:
    """The compute peak as the machine table's title gives it: its kernel, the matrix product's rate
    when another kernel is faster, and the peaks at other thread counts."""
    kernel = info["peak_kernel"]
    if kernel != "matrix product":
        kernel += f"; matrix product {info['matmul_gflops']:.1f}"
    peak = f"{info['peak_dtype']} compute peak {info['peak_gflops']:.1f} GFLOP/s ({kernel})"
    if info["peak_gflops_1_thread"] and info["threads"] > 1:
        others = {r["cnnlab_threads"]: r["peak_gflops_used"] for r in rows if r["cnnlab_threads"] not in (1, info["threads"])}
        peak += f" with {info['threads']} threads, {info['peak_gflops_1_thread']:.1f} with 1"
        peak += "".join(f", {gflops:.1f} with {t}" for t, gflops in sorted(others.items()))
        peak += " (each case against its own thread count)"
    return peak


def machine_row(r: dict) -> dict:
    """A result row as the against-the-machine table shows it."""
    return {
        "case": r["case"],
        "model": r["model"],
        "batch": r["batch_size"],
        "MFLOP/sample": f"{r['flops_per_sample'] / 1e6:.3g}",
        "cnnlab GFLOP/s": "-" if r["gflops"] != r["gflops"] else f"{r['gflops']:.3g}",
        "threads": r["cnnlab_threads"],
        "% of peak": _pct(r["fraction_of_peak"]),
        "bound": r["bound"] or "-",  # none: no time to rate (a target not reached)
    }


def case_names(cases: str | None, default: tuple[str, ...]) -> list[str]:
    """--cases as a list: default when not given; naming none, or a case twice, is refused."""
    if cases is None:
        return list(default)
    names = cases.replace(",", " ").split()
    if not names:
        raise CnnlabUsage(f"--cases {cases!r} names no case; e.g. --cases fc,cnn, or leave it out to run {', '.join(default)}")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise CnnlabUsage(f"--cases names {', '.join(twice)} more than once; each case is measured once, --repeats N times")
    return names


def check_amp(amp: str | None) -> None:
    """--amp names itself when refused (not the train.amp of a case's config file)."""
    if amp not in (None, "none", "bf16"):
        raise CnnlabUsage(f"unknown --amp {amp!r}; valid: none, bf16")


def threads_warning(threads: int | None, cores: int | None) -> str | None:
    """The warning for --threads beyond the machine's cores (accepted, as train.threads is), or None."""
    if threads is None or not cores or threads <= cores:
        return None
    return (f"warning: --threads {threads} is more than this machine's {cores} cores: the threads wait for each other, "
            "and the speed-ups and % of peak say more about that than about either side")


def check_threads(threads: int | None) -> None:
    """--threads held to train.threads' bounds, and named as typed when refused."""
    from cnnlab.config import TrainConfig, validate

    validate({"threads": threads}, TrainConfig, "", names={"threads": "--threads"})


def read_results(path: Path) -> tuple[list[str], list[list[str]]]:
    """The results CSV's header and rows, each cell the text it holds, so that adding rows keeps the
    rest as written (a column or cell edited by hand too); ([], []) when there is none. RunError when
    it cannot be read (a directory, too), or rewriting it would lose or misplace cells: a row longer
    than the header (its extra cells have no column), a column name twice (which one is cnnlab's?)."""
    from cnnlab.errors import RunError
    from cnnlab.runs import error_reason

    def cannot_read(reason: str) -> RunError:
        return RunError(f"cannot read {path} ({reason}); move it aside and run cnnlab bench again")

    if not path.exists():
        return [], []
    if not path.is_file():  # a directory cannot be replaced by the rewrite
        raise cannot_read("not a file")
    if not path.stat().st_size:
        return [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no column name
            reader = csv.reader(f, strict=True)  # a quote left open read the rest of the file as one cell
            lines = [(reader.line_num, row) for row in reader if row]  # blank lines are no rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise cannot_read(error_reason(e)) from None
    if not lines:
        return [], []
    (_, header), rows = lines[0], lines[1:]
    too_long = next(((n, row) for n, row in rows if len(row) > len(header)), None)
    if too_long:
        raise cannot_read(f"line {too_long[0]} has {len(too_long[1])} cells, the header {len(header)} columns")
    twice = next((name for name in header if name and header.count(name) > 1), None)
    if twice is not None:
        raise cannot_read(f"the column {twice!r} twice")
    return header, [row for _, row in rows]


def _cell(value) -> str:
    """A value as the results CSV holds it: None and NaN empty, True/False, numbers as Python prints them."""
    return "" if value is None or value != value else str(value)


def results_text(header: list[str], old: list[list[str]], rows: list[dict]) -> str:
    """The CSV of old rows (as read) and new ones: the header's columns in its order, then any column
    only the new rows have (empty in the old ones); a column the new rows lack is empty in them."""
    columns = header + [c for c in dict.fromkeys(k for r in rows for k in r) if c not in header]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(row + [""] * (len(columns) - len(row)) for row in old)
    writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    return text.getvalue()


def check_results_writable(path: Path) -> None:
    """A results file that cannot be replaced is refused before minutes of measuring, not after."""
    from cnnlab.errors import RunError

    if path.exists() and not os.access(path, os.W_OK):
        raise RunError(f"{path} is not writable; make it writable or move it aside, and run cnnlab bench again")


def append_results(path: Path, rows: list[dict]) -> Path:
    """Add rows to the CSV (rewritten whole and atomically, its other rows and cells as they were).
    Should the CSV have become unreadable or unwritable while measuring, the rows go to a new file
    beside it rather than being lost. Returns the file written."""
    from cnnlab.errors import RunError
    from cnnlab.runs import atomic_write

    try:
        atomic_write(path, results_text(*read_results(path), rows))
        return path
    except RunError as e:
        beside = path.with_name(f"{path.stem}-{rows[0]['time'] if rows else 'new'}.csv".replace(":", ""))
        print(f"{e}; this run's rows from here on are in {beside}", file=sys.stderr)
        atomic_write(beside, results_text([], [], rows))
        return beside


class KeptResults:
    """Each case's row appended to the results CSV as soon as it is measured, so that an interrupted
    bench keeps the cases it finished; should the CSV fail, the rows go on in a file beside it."""

    def __init__(self, path: Path, run: dict):
        self.path, self.run, self.count = path, run, 0  # run: the columns all of this run's rows share

    def add(self, row: dict, info: dict) -> None:
        from cnnlab.runs import ensure_dir

        ensure_dir(self.path.parent, "bench results directory")  # with the first row: a bench that kept none leaves none
        self.path = append_results(self.path, [{**self.run, **info, **row}])
        self.count += 1

    def __str__(self) -> str:
        return f"{self.count} finished case(s) kept in {self.path}" if self.count else "no case had finished; nothing written"


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="A fraction of an epoch per case, one repeat, at most 2,000 test images (for CI); not with lenet99, whose 99% it never reaches."),
    device: str = typer.Option("cpu", "--device", parser=device_name, help="auto | cpu | cuda | cuda:N (not the configs' device). On CUDA cnnlab trains with bf16 autocast; the reference in float32."),
    cases: Optional[str] = typer.Option(None, "--cases", help="Comma-separated cases: fc, cnn, lenet, trashnet, lenet99. Default: all (--quick: all but lenet99)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Reference/cnnlab pairs per case. Default 3 (--quick: 1)."),
    compile: bool = typer.Option(False, "--compile", help="train.compile for cnnlab: on the CPU its whole training step compiled, the compile time shown apart from its seconds; on CUDA its model, the compile time counted in them."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="On CUDA, cnnlab replays each training step as a CUDA graph (train.cuda_graphs)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="cnnlab's autocast: none | bf16. Default: bf16 on CUDA, none on the CPU."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads for BOTH sides. Default: torch's choice for the reference, the config's for cnnlab."),
    markdown: bool = typer.Option(False, "--markdown", help="Also print the table as Markdown (for the README)."),
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
):
    """Time the tutorials' loop and cnnlab on the studies' models, interleaved; append to runs/bench/results.csv."""
    from cnnlab.bench.cases import COMPUTE_BOUND, DEFAULT_CASES, QUICK_CASES, check_cases
    from cnnlab.interrupts import Interrupted, interruptible
    from cnnlab.report import print_table, say
    from cnnlab.report import markdown as markdown_table
    from cnnlab.runs import check_dir, runs_root, utc_now

    names = case_names(cases, QUICK_CASES if quick else DEFAULT_CASES)
    check_cases(names, quick)
    check_amp(amp)
    check_threads(threads)
    # all that can be refused is, before minutes of measuring and before the results directory is
    # made (a refused bench leaves none behind)
    root = runs_root(runs_dir)
    check_dir(root)  # a runs directory under a file is refused as train refuses it
    out_dir = root / "bench"
    check_dir(out_dir, "bench results directory")
    read_results(out_dir / RESULTS)  # an unreadable or unwritable results file, too
    check_results_writable(out_dir / RESULTS)
    from cnnlab.bench.suite import measure, plan_bench  # torch: once the options are good
    from cnnlab.provenance import git_state

    plan = plan_bench(names, device=device, quick=quick, compile=compile, amp=amp, threads=threads, cuda_graphs=cuda_graphs, data_dir=data_dir)
    repeats = repeats or (1 if quick else 3)
    kept = KeptResults(out_dir / RESULTS, {"time": utc_now(), "quick": quick, **git_state()})

    def keep(row: dict, info: dict) -> None:
        say(
            f"{row['case']}: reference {_took(row['ref_seconds'])}, cnnlab {_took(row['cnnlab_seconds'])}"
            f"{'' if row.get('cnnlab_compile_seconds') is None else ' (and compiling ' + _took(row['cnnlab_compile_seconds']) + ')'}, "
            f"accuracy {_pct(row['ref_acc'])} vs {_pct(row['cnnlab_acc'])}"
        )
        with signals.deferred():  # a signal now waits until the row is written
            kept.add(row, info)

    with interruptible() as signals:  # SIGTERM, too, stops the bench with the finished cases kept
        try:
            rows, info = measure(plan, repeats, on_row=keep)
        except KeyboardInterrupt as e:  # also Interrupted
            raise Interrupted.of(e, "bench", str(kept), signals.received) from None
    load = "/".join(_load(v) for v in (info["load_before"], info["load_after"]))
    speed, machine = [speed_row(r) for r in rows], [machine_row(r) for r in rows]
    print_table(speed, title=f"cnnlab bench{' --quick' if quick else ''} on {info['device']}: medians of {repeats} interleaved pair(s), seconds of training per budget")
    print_table(machine, title=f"cnnlab against the machine: {peak_title(info, rows)}")
    say(
        f"machine: {info['cpu_model']}, {info['cores']} cores, torch {info['torch_version']}, "
        f"device {info['device_name']}; load average before/after {load}; memory: {rows[0]['memory'] if rows else '-'}; "
        f"bound: compute at {COMPUTE_BOUND:.0%} of the compute peak or more, else per-step overhead"
    )
    for r in rows:
        if r["case"] == "lenet99":
            say(
                f"lenet99: epochs to 99% test accuracy: reference {_epochs_to_target(r['ref_seconds'], r['ref_epochs'])}, "
                f"cnnlab {_epochs_to_target(r['cnnlab_seconds'], r['cnnlab_epochs'])}"
            )
    if markdown:
        print(markdown_table(speed) + "\n" + markdown_table(machine), end="")
    crowded = threads_warning(threads, info["cores"])
    if crowded:
        print(crowded, file=sys.stderr)
    if info["busy"]:
        others = "unknown" if info["others_load"] is None else f"{info['others_load']:.1f} cores' worth"
        print(
            f"warning: the machine was busy: 1-minute load average before/after {load} on {info['cores']} cores, other work "
            f"beside the bench {others}; the speed-ups and % of peak are unreliable",
            file=sys.stderr,
        )
    print(out_dir)
