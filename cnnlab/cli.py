"""The `cnnlab` command line: thin Typer commands that parse, call one function and print.

torch is imported only inside the commands that train, so `--help` and config errors answer at once.
Every error a user can cause ends as one line on stderr: exit 2 for usage/config errors, 1 for
runtime failures, 128 + signal for an interruption.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # older typer drives the click package
    from click.exceptions import ClickException, NoArgsIsHelpError

from cnnlab.errors import CnnlabError, in_run, one_line
from cnnlab.named import is_file
from cnnlab.runs import STATUSES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run the classic CNN studies on MNIST, Fashion-MNIST and CIFAR-10: fast, reproducible, honest numbers.",
)


class CnnlabUsage(CnnlabError):
    exit_code = 2


def not_empty(option: str, convert=str, instead: str | None = None):
    """The parser of an option whose empty value (`--runs-dir "$UNSET"`) would silently stand for
    something else: not given, or the working directory ('' as a path is '.'). Refused instead,
    saying what to give (instead: for an argument that cannot be left out)."""

    def parse(value: str):
        if not value.strip():
            raise CnnlabUsage(f"{option} is empty: {instead or f'give a value, or leave {option} out'}")
        return convert(value)

    return parse


def device_name(value: str) -> str:
    """--device's parser: the names a config's device takes, refused as --device's."""
    from cnnlab.config import DEVICE_NAMES, DEVICES

    if not re.fullmatch(DEVICES, value):
        raise CnnlabUsage(f"unknown --device {value!r}; valid: {DEVICE_NAMES}")
    return value


def one_of(option: str, names) -> Callable[[str], str]:
    """The parser of an option that takes one of names() (called when the option is given: the
    schema's names come without torch, but not without importing cnnlab.config)."""

    def parse(value: str) -> str:
        valid = list(names())
        if value not in valid:
            raise CnnlabUsage(f"unknown {option} {value!r}; valid: {', '.join(valid)}")
        return value

    return parse


def _datasets():
    from cnnlab.config import DATASET_SHAPES

    return DATASET_SHAPES


def _models():
    from cnnlab.config import model_names  # the schema's names: no torch, unlike cnnlab.models

    return model_names()


dataset_name = one_of("--dataset", _datasets)  # --dataset's parser: a dataset cnnlab knows
SPLITS = ("train", "test")


def split_name(option: str) -> Callable[[str], str]:
    """The parser of an option naming a dataset split (samples --split, shift-sweep --image-split)."""
    return one_of(option, lambda: SPLITS)


DataDir = typer.Option(None, "--data-dir", parser=not_empty("--data-dir", Path), metavar="DIR", help="Dataset folder (torchvision layout). Default: the config's dataset.data_dir, else $CNNLAB_DATA_DIR, else ./data.")
RunsDir = typer.Option(None, "--runs-dir", parser=not_empty("--runs-dir", Path), metavar="DIR", help="Where run directories go. Default: $CNNLAB_RUNS_DIR, else ./runs.")
Device = typer.Option(None, "--device", parser=device_name, help="auto | cpu | cuda | cuda:N (overrides the config's device).")


def positional_and_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Split arguments into positional ones and KEY=VALUE overrides. A path is positional even with
    '=' in it (exp/lr=0.1/mnist.yaml): an existing file, or a '/' before the '=', which no key holds
    (a missing configs/a=b.yaml is told it is not found, not that CONFIG is missing)."""
    is_path = [("=" not in a) or "/" in a.split("=", 1)[0] or is_file(a) for a in args]
    return [a for a, p in zip(args, is_path) if p], [a for a, p in zip(args, is_path) if not p]


def split_args(args: list[str], what: str = "config file", example: str = "train.epochs=3") -> tuple[str | None, list[str]]:
    """[CONFIG] [KEY=VALUE ...] -> (config path or None, overrides). what: the positional argument,
    and example: an override the command applies, for the error when there are several."""
    paths, overrides = positional_and_overrides(args)
    if len(paths) > 1:
        extra = paths[1]
        if what == "config file":  # name the one that is not a config (a file, or a config's name)
            from cnnlab.named import find

            extra = next((p for p in paths if not p.endswith((".yaml", ".yml")) and not is_file(p) and find(p, "config") is None), extra)
        raise CnnlabUsage(f"{extra!r} is not KEY=VALUE: give one {what}, then overrides like {example}")
    return (paths[0] if paths else None), overrides


def load(config: str, overrides: list[str], device: str | None = None, stored: bool = False):
    """config with overrides and --device; stored: a run's own config.yaml (see config.validate)."""
    from cnnlab.config import load_config

    return load_config(config, overrides + ([f"device={device}"] if device is not None else []), stored)


@app.command()
def train(
    args: list[str] = typer.Argument(None, metavar="CONFIG [KEY=VALUE]...", help="A YAML config (a file, or the name of one of configs/, e.g. mnist_cnn) and dotted overrides, e.g. train.epochs=3 optimizer.lr=0.05"),
    resume: Optional[Path] = typer.Option(None, "--resume", parser=not_empty("--resume", Path), metavar="RUN_DIR", help="Continue (or extend, with train.epochs=N) the run in RUN_DIR."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    data_dir: Optional[Path] = DataDir,
    runs_dir: Optional[Path] = RunsDir,
    device: Optional[str] = Device,
):
    """Train one config; print the epochs table; the last line is the run directory (also when
    the run is interrupted or fails once its directory exists)."""
    from cnnlab.config import config_to_dict, dump_yaml

    config, overrides = split_args(args or [])
    if resume is not None:
        if config is not None:
            raise CnnlabUsage("--resume takes the config from the run directory; pass only KEY=VALUE overrides")
        if runs_dir is not None:  # it would be ignored: the run goes on where it is
            raise CnnlabUsage(f"--resume continues the run in {resume} itself: give no --runs-dir")
        from cnnlab.config import load_config
        from cnnlab.runs import CONFIG, open_run

        stored = open_run(resume, resuming=True) / CONFIG
        trained = load_config(stored, stored=True)  # as the run trained
        cfg = load(str(stored), overrides, device, stored=True)  # as an earlier cnnlab accepted it
    elif config is None:
        raise CnnlabUsage("missing CONFIG: a config file or the name of one, e.g. cnnlab train mnist_cnn (cnnlab configs lists them)")
    else:
        cfg = load(config, overrides, device)
        if not print_config:
            from cnnlab.runs import check_dir, runs_root

            check_dir(runs_root(runs_dir))  # before seconds of loading the data
    if resume is not None:  # what the resume refuses (epochs done, a changed optimizer), before seconds of loading its data;
        from cnnlab.resumable import check_resume_changes  # and --print-config's config is one the resume would train with

        check_resume_changes(resume, trained, cfg)  # an override refused before torch loads
        from cnnlab.resume import check_resume

        check_resume(resume, trained, cfg)
    if print_config:
        print(dump_yaml(config_to_dict(cfg)), end="")
        return
    from cnnlab.experiment import run
    from cnnlab.report import ConsoleProgress

    progress = ConsoleProgress(cfg.train.epochs, cfg.name)
    try:
        result = run(cfg, runs_dir=runs_dir, data_dir=data_dir, resume=resume, progress=progress, on_note=progress.note)
    finally:
        progress.close()
    tell_finished(result.path, "run", lambda: _tell_result(cfg, result))


def tell_finished(path: Path, what: str, tell: Callable[[], None], complete: bool = True) -> None:
    """tell() what a finished run, study or sweep (what) came to, then print its directory: stdout's
    last line, also when a signal (or a closed pipe) comes while it tells (complete: the work is)."""
    try:
        tell()
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):  # exit 128+N as a signal's, saying nothing was lost
            from cnnlab.errors import signal_name
            from cnnlab.interrupts import Interrupted

            signum = getattr(e, "signum", signal.SIGINT)
            where = f"; the {what} is complete: {path}" if complete else f"; the {what} is in {path}"
            raise in_run(Interrupted(signum, f"stopped by {signal_name(signum)} while its results were shown{where}"), path) from None
        raise in_run(e, path)
    print(path)
    global _told_complete
    _told_complete = complete


# set once a command has told its complete work and printed its last line: a Ctrl-C after that, on
# the way out of main(), changes nothing, and the command exits as it would have (0)
_told_complete = False
_exit_code: int | None = None  # main()'s exit code, once it has one


def _tell_result(cfg, result) -> None:
    """The finished run's epochs table and one line on how it went."""
    from cnnlab.config import article_text
    from cnnlab.report import print_epochs, say

    print_epochs(result.metrics)
    say(finished_line(cfg, result.summary, article_text(result.summary.get("reported"), cfg.transform.permute)))


def finished_line(cfg, s: dict, article: str | None) -> str:
    """One line on how a finished run went."""
    line = f"{cfg.name}: {cfg.model.name} on {cfg.dataset.name}, {s['params']:,} params, test accuracy {s['test_acc']:.2%} after {s['epochs']} epoch(s), {s['train_seconds']:.1f} s training on {s['device']}"
    compiled, cached = s.get("compile_seconds"), s.get("compiled_step_cached")
    # loading a step from the cache takes milliseconds: say so rather than "0.0 s of it compiling"
    if compiled is not None and (compiled >= 0.05 or not cached):
        # a resumed run: the seconds are all its sessions', the cache this session's
        line += f" ({compiled:.1f} s of it compiling" + ("; this session's step taken from the cache)" if cached else ")")
    elif cached:
        line += " (the compiled step taken from the cache)"
    if article is not None:
        line += f" (article: {article})"
    return line


@app.command()
def summary(
    args: list[str] = typer.Argument(None, metavar="CONFIG [KEY=VALUE]..."),
):
    """Each layer's type, output shape, parameters and the output-size rule, for the config's model."""
    from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES
    from cnnlab.report import print_fitted, say

    config, overrides = split_args(args or [])
    if config is None:
        raise CnnlabUsage("missing CONFIG, e.g. cnnlab summary mnist_cnn")
    cfg = load(config, overrides)
    from cnnlab.models import all_params, build_model  # torch: once the arguments are good
    from cnnlab.summary import summarize

    shape = DATASET_SHAPES[cfg.dataset.name]
    model = build_model(cfg.model, shape, DATASET_CLASSES[cfg.dataset.name])
    rows, trainable = summarize(model, shape)
    data = [
        {"layer": r.name, "type": r.kind, "output shape": "x".join(map(str, r.output_shape)),
         "params": f"{r.params:,}" + (f" ({r.frozen:,} frozen)" if r.frozen else ""), "output size": r.rule}
        for r in rows
    ]
    # on a narrow terminal the output-size rule goes rather than every name and number shrinking to '…'
    columns = ["layer", "type", "output shape", "params", "output size"]
    print_fitted(data, columns, ["output size"], tuple(columns[:-1]), f"{cfg.model.name} on {cfg.dataset.name} input {'x'.join(map(str, shape))}")
    total = all_params(model)
    frozen = f" ({trainable:,} trainable, {total - trainable:,} frozen)" if total != trainable else ""
    say(f"total parameters: {total:,}{frozen}")


@app.command("runs")
def list_runs(
    dataset: Optional[str] = typer.Option(None, "--dataset", parser=dataset_name, help="Only those on this dataset: mnist | fashion-mnist | cifar10 | toy (a study or sweep: any of its members')."),
    model: Optional[str] = typer.Option(None, "--model", parser=one_of("--model", _models), help="Only those training this model.name, e.g. cnn (a study or sweep: any of its members')."),
    status: Optional[str] = typer.Option(None, "--status", parser=one_of("--status", lambda: STATUSES), help=f"Only those with this status: {' | '.join(STATUSES)} (dead: marked running, its process gone)."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
    runs_dir: Optional[Path] = RunsDir,
):
    """List runs, studies and sweeps, newest first."""
    from cnnlab.report import print_fitted, say
    from cnnlab.runs import list_runs as find, runs_to_list

    root = runs_to_list(runs_dir)
    unreadable: list[str] = []
    unstarted: list[str] = []
    rows = find(root, unreadable, unstarted)
    # the directories left out are named: they would vanish from the list unsaid
    if unreadable:
        print(f"note: left out {len(unreadable)} whose {'summary.json' if len(unreadable) == 1 else 'summary.json files'} cannot be read "
              f"(edited or damaged?): {_some(unreadable)}", file=sys.stderr)
    if unstarted:
        print(f"note: left out {len(unstarted)} with no summary.json, whose process was killed as it started (nothing "
              f"trained there; safe to remove): {_some(unstarted)}", file=sys.stderr)
    want = {"dataset": dataset, "model": model, "status": status}
    # a study lists its members' datasets and models comma-separated ("fc,cnn"): any one matches
    rows = [r for r in rows if all(v is None or v in str(r.get(k)).split(",") for k, v in want.items())]
    cols = ["id", "kind", "name", "dataset", "model", "epochs", "test_acc", "train_seconds", "status"]
    if csv:
        from cnnlab.runs import csv_text

        print(csv_text(rows, cols), end="")
    else:
        filters = ", ".join(f"{k} {v}" for k, v in want.items() if v is not None)
        if not rows:
            say(f"no runs{f' with {filters}' if filters else ''} in {root}")
            return
        # the ids stay whole (they are what show and --resume take); on a narrow terminal the columns
        # the id repeats (name) or that matter least go, rather than every column shrinking to "…"; the
        # model last, as the config name in the id mostly says it
        # test_acc and status are never squeezed to "…": a table still too wide (a study's long id on 80
        # columns) is printed whole, and the terminal wraps its lines
        print_fitted(rows, cols, ["name", "kind", "train_seconds", "epochs", "dataset", "model"], ("id", "test_acc", "status"), all_in="--csv")


def _some(names: list[str]) -> str:
    return f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"


@app.command("configs")
def list_configs():
    """List the configs, studies and sweeps that train, compare and sweep take by name."""
    from cnnlab.catalogue import COLUMNS, catalogue
    from cnnlab.named import own_configs, roots
    from cnnlab.report import console, say, table

    rows = catalogue()
    console.print(table(rows, COLUMNS, title="by name: cnnlab train NAME, cnnlab compare NAME, cnnlab sweep NAME", whole=("name",)))
    looked_in = [root for root in roots() if root.is_dir()]
    say(f"from {looked_in[0]}/ here then {looked_in[1]} (cnnlab's own)" if len(looked_in) == 2 else f"from {own_configs()}")


# Commands beside their code (studies, bench, sweeps, ...) register on `app` when imported.
from cnnlab import commands  # noqa: E402,F401


def discard(stream) -> None:
    """Send what is still buffered in stream, and all that follows, to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


class StreamUntilReaderGone:
    """sys.stdout (or sys.stderr) that, once its reader has gone (`cnnlab train ... | head -1`), sends the rest to
    /dev/null instead of raising BrokenPipeError: a run, study or bench whose output nobody reads
    any more still trains to its end and writes its files. So does one whose output cannot be
    written (a full disk, /dev/full): `failed` keeps why, for main() to say at the end. A character
    the stream's encoding lacks (an ASCII or cp1252 terminal: '…', '±') is written as '?'.
    Wrapping sys.stderr (keep_failure False), it lets the notes written there go as quietly."""

    def __init__(self, stream, keep_failure: bool = True):
        self._stream = stream
        self._keep_failure = keep_failure
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = self._stream.encoding or "ascii"
            return self.write(text.encode(encoding, "replace").decode(encoding))
        except OSError as e:
            self._lost(e)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self._lost(e)

    def _lost(self, e: OSError) -> None:
        if self._keep_failure and not isinstance(e, BrokenPipeError):
            self.failed = self.failed or e
        discard(self._stream)

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self._stream, name)


def flowed(text: str | None) -> str | None:
    """A command's docstring as --help should show it: each paragraph one line, for the terminal to
    wrap (Typer keeps the line breaks of the source, mid-sentence, in all but a command's first one)."""
    if text is None:
        return None
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(text).split("\n\n"))


def tell(text: str) -> None:
    """text as a line on stderr, unless stderr is gone (the terminal closed: SIGHUP): the exit code
    still tells how the command ended."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        discard(sys.stderr)  # what the failed write left buffered too: not a traceback at exit


def main() -> None:
    """Entry point: run the app and turn user errors into one line and an exit code.

    The click context is driven here rather than through app(), whose own handling turns every
    KeyboardInterrupt into exit 130 (SIGTERM must give 143) and prints multi-line usage errors.
    SIGTERM, like Ctrl-C, ends any command in one line, even before a run installs its own handler
    (while torch loads, or while a config file is still being read). A run, study or sweep that
    stops once its directory exists ends stdout with that directory (e.run_dir, see errors.in_run),
    as a finished one does.
    """
    from cnnlab.interrupts import interruptible

    if sys.platform == "win32":  # run directories are locked with fcntl, processes probed with os.kill(pid, 0)
        print("error: cnnlab needs Linux or macOS; on Windows, run it in WSL", file=sys.stderr)
        raise SystemExit(1)
    global _told_complete, _exit_code
    _told_complete, _exit_code = False, None
    returned = False  # the command did all its work: a Ctrl-C after that changes nothing
    command = typer.main.get_command(app)
    for sub in command.commands.values():
        sub.help = flowed(sub.help)
    stdout, stderr = sys.stdout, sys.stderr
    out = StreamUntilReaderGone(stdout) if stdout is not None else None  # None: started with stdout closed (`cnnlab ... >&-`)
    # to the exit: once the command is over, a signal changes nothing (Ctrl-C pressed again and
    # again as the first one's stop is told, a SIGTERM after a SIGINT, cut the telling short)
    with interruptible() as signals:
        try:
            if out is not None:
                sys.stdout = out
            if stderr is not None:  # a note on a stderr whose reader has gone (`2>&1 | :`) must not end the command
                sys.stderr = StreamUntilReaderGone(stderr, keep_failure=False)
            with command.make_context("cnnlab", sys.argv[1:]) as ctx:
                try:
                    command.invoke(ctx)
                    returned = signals.critical = True
                except BaseException as e:
                    signals.critical = True
                    if getattr(e, "run_dir", None) is not None:  # interrupted or failed: scripts still take the last line
                        print(e.run_dir)
                    raise
            code = 0
        except typer.Exit as e:  # --help, --version, or a command that exits on purpose
            code = e.exit_code
        except NoArgsIsHelpError as e:  # a bare `cnnlab`: the help, then one line saying what is missing
            if e.format_message().strip():  # (Typer's rich help is printed as the error is made, and leaves it empty)
                print(e.format_message())
            tell("error: missing COMMAND: one of those above (cnnlab COMMAND --help tells its options)")
            code = e.exit_code
        except ClickException as e:  # unknown option or command, missing argument, bad value
            tell(f"error: {one_line(e.format_message())}")
            code = e.exit_code
        except CnnlabError as e:
            tell(f"error: {one_line(str(e))}")
            code = e.exit_code
        except (KeyboardInterrupt, typer.Abort) as e:
            if _told_complete or returned:  # all written and told (a run's directory printed last): as it would have ended
                code = 0
            else:
                tell(f"interrupted: {one_line(str(e))}" if str(e) else "interrupted")
                code = 128 + getattr(e, "signum", signal.SIGINT)
        except BrokenPipeError:  # a write that bypassed sys.stdout, after its reader had gone
            sys.stderr.close()
            code = 1
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:  # only a path the user gave is ever too long: anything else is a bug to see
                raise
            tell(f"error: {e.strerror}: {one_line(str(e.filename))}")
            code = 2
        finally:
            if out is not None:
                out.flush()  # what is still buffered: a failure to write it is caught there, too
            sys.stdout, sys.stderr = stdout, stderr
        _exit_code = code  # entry(): a Ctrl-C from here on ends the process with it
        if out is not None and out.failed is not None:
            tell(f"error: cannot write the output: {out.failed.strerror or out.failed}")
            code = _exit_code = code or 1
        sys.exit(code)


def entry() -> None:
    """The `cnnlab` command (and `python -m cnnlab`): main(), after which a Ctrl-C (or SIGTERM, SIGHUP)
    during Python's own shutdown (up to a second once torch is loaded) ends the process at once with main's exit code,
    instead of printing the traceback a KeyboardInterrupt raised in a finalizer leaves, or making a
    finished run exit 130. Everything is written by then. Tests call main() itself, so that no
    handler of theirs is changed."""
    try:
        main()
    except BaseException as e:
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else _exit_code
        if code is None:  # a bug's traceback: a Ctrl-C while Python shuts down ends it by the signal
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise
        if isinstance(e, KeyboardInterrupt):  # a Ctrl-C as main() went out with its code
            _exit_now(code)
        from cnnlab.interrupts import STOP_SIGNALS

        for signum in STOP_SIGNALS:  # SIGTERM too: the second of a supervisor's SIGINT, SIGTERM
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, lambda signum, frame: _exit_now(code))
        raise


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a reader gone, a stream closed
            pass
    os._exit(code)
