"""Terminal output: live training progress and rich tables from rows / DataFrames.

Progress is a rich bar on a terminal and one plain line per epoch otherwise (CI logs, pipes); of
more than MAX_EPOCH_LINES epochs, both print a sample, as the epoch tables show one.
"""

from __future__ import annotations

import math
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cnnlab.runs import METRIC_COLUMNS

def on_a_terminal() -> bool:
    """Whether stdout is a terminal (not a pipe, a file, or closed: `cnnlab ... >&-`)."""
    return sys.stdout is not None and sys.stdout.isatty()


def columns_set() -> int | None:
    """$COLUMNS when it is a width (a whole number from 1); None when unset or not one (0, -5, abc:
    rich printed nothing at 0, and fell back to 80 columns for the others, narrowing a pipe's tables)."""
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


def has_a_width() -> bool:
    """Whether output has a width to fit: a terminal's or $COLUMNS (a pipe or a file has none)."""
    return on_a_terminal() or columns_set() is not None


def console_width() -> int | None:
    """$COLUMNS, else the terminal's (None: rich asks it), else 120 off a terminal (CI logs, pipes),
    where rich would wrap tables at 80 columns."""
    return columns_set() or (None if on_a_terminal() else 120)


# no markup and no emoji codes: what is printed holds the user's text (descriptions, paths, run ids),
# where '[/x]' would fail, '[bold]' vanish and ':fire:' become a flame
console = Console(highlight=False, markup=False, emoji=False, width=console_width())


def say(text: str) -> None:
    """Print text as written: a line longer than the console stays one line (a log's, a pipe's),
    not broken or cut at its width; a terminal wraps it."""
    console.print(text, soft_wrap=True)

# how each metrics column is shown
FORMATS = {
    "train_loss": "{:.4f}", "test_loss": "{:.4f}", "train_acc": "{:.2%}", "test_acc": "{:.2%}",
    "epoch_seconds": "{:.2f}", "eval_seconds": "{:.2f}", "samples_per_sec": "{:,.0f}", "lr": "{:.4g}",
    "train_seconds": "{:.1f}",
}


def fmt(column: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    try:
        return FORMATS.get(column, "{}").format(value)
    except (ValueError, TypeError):
        return str(value)


MAX_EPOCH_LINES = 50  # beyond this many epochs (the toy's 2,000) every k-th is shown, and the first and last


def shown_epoch(epoch: int, epochs: int) -> bool:
    """Whether the progress lines and epoch tables show this epoch (all of them, up to MAX_EPOCH_LINES)."""
    return epoch in (1, epochs) or epoch % math.ceil(epochs / MAX_EPOCH_LINES) == 0


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}  "
        f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.2%}  "
        f"{row['epoch_seconds']:.2f}s ({row['samples_per_sec']:,.0f} samples/s)"
    )


class ConsoleProgress:
    """Engine callbacks that draw a live bar (terminal) or print a line per shown epoch (anything
    else); the first epoch a session trains is always shown (a resume's too)."""

    def __init__(self, epochs: int, label: str, live: bool | None = None):
        self.epochs, self.label = epochs, label
        self.live = on_a_terminal() if live is None else live
        self._bar: Progress | None = None
        self._task = None
        self._last = 0.0
        self._shown_any = False

    def epoch_start(self, epoch: int, steps: int) -> None:
        if not self.live:
            return
        if self._bar is None:
            self._bar = Progress(
                # the label holds the user's text (a config's name): shown as it is, like the console's
                TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}", markup=False), console=console, transient=True,
            )
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(f"{self.label} epoch {epoch}/{self.epochs}", total=steps, stats="")

    def step(self, step: int, steps: int, loss) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last > 0.2 or step == steps:  # reading the loss syncs the device: not every step
            self._last = now
            self._bar.update(self._task, completed=step, stats=f"loss {float(loss):.4f}")

    def epoch_end(self, row: dict) -> None:
        if self._shown_any and not shown_epoch(row["epoch"], self.epochs):
            return
        self._shown_any = True
        line = epoch_line(row, self.epochs)
        if self._bar is not None:
            self._bar.console.print(line, soft_wrap=True)  # one line, as say() prints it
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        note(text, self.live)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def note(text: str, live: bool | None = None) -> None:
    """A hint for the person watching (stderr, on a terminal only: logs and pipes stay as they were;
    live: whether there is one, when the caller knows)."""
    if on_a_terminal() if live is None else live:
        print(text, file=sys.stderr, flush=True)


def table(rows: list[dict], columns: list[str] | None = None, title: str | None = None, whole: tuple[str, ...] = ()) -> Table:
    """A rich table of rows; the `whole` columns (a run id to copy) are never cut or wrapped."""
    columns = columns or (list(rows[0]) if rows else [])
    cells = [[fmt(c, r.get(c)) for c in columns] for r in rows]
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        keep = {"no_wrap": True, "min_width": max(len(c), *(len(row[i]) for row in cells))} if c in whole and cells else {}
        t.add_column(c, justify="left" if c in ("model", "name", "id", "kind", "status", "dataset", "config", "key", "value", "trains", "about", "layer", "type") else "right", **keep)
    for row in cells:
        t.add_row(*row)
    return t


def fitted_table(
    rows: list[dict], columns: list[str], droppable: list[str], whole: tuple[str, ...] = (), title: str | None = None,
) -> tuple[Table, list[str]]:
    """table(rows, columns) less as few of the droppable columns (left out in that order) as it takes
    to fit the console's width, where rich would otherwise squeeze every cell to an ellipsis; and the
    columns left out. A table that no leaving out makes fit is printed at its natural width. Output with no width (a pipe, a file) gets every column at its natural width:
    print the table with crop=False."""
    def natural_width(shown: Table) -> int:  # not the one rich would squeeze it to
        return console.measure(shown, options=console.options.update_width(10_000)).maximum

    left_out: list[str] = []
    shown = table(rows, columns, title, whole)
    if not has_a_width():  # the console's 120 columns are only its default for pipes
        shown.width = natural_width(shown)
        return shown, left_out
    for column in droppable:
        if natural_width(shown) <= console.width:
            break
        left_out.append(column)
        shown = table(rows, [c for c in columns if c not in left_out], title, whole)
    if natural_width(shown) > console.width:  # still too wide (a long whole column): whole, the terminal wraps its lines
        shown.width = natural_width(shown)
    return shown, left_out


def print_fitted(
    rows: list[dict], columns: list[str], droppable: list[str], whole: tuple[str, ...], title: str | None = None, all_in: str | None = None,
) -> None:
    """Print fitted_table(...) and, when it left columns out, one line that names them (and all_in:
    where every column is)."""
    shown, left_out = fitted_table(rows, columns, droppable, whole, title)
    console.print(shown, crop=False)  # a pipe's table is wider than the console's default 120 columns
    if left_out:
        say(f"(left out at {console.width} columns: {', '.join(left_out)}" + (f"; {all_in} has them all)" if all_in else ")"))


def print_table(rows: list[dict], title: str | None = None) -> None:
    """A table of numbers whose cells are never squeezed to '…': too wide for the console, it is
    printed whole and the terminal wraps its lines."""
    print_fitted(rows, list(rows[0]) if rows else [], [], (), title)


# the epochs table on a narrow terminal: no digit is cut ('0.…'); these go, in this order, instead
EPOCH_COLUMNS_DROPPED = ["samples_per_sec", "epoch_seconds", "train_loss", "test_loss"]


def epochs_table(rows: list[dict]) -> tuple[list[dict], str | None]:
    """The epochs' metrics rows to show and the table's title: of many epochs a sample (metrics.csv
    has them all)."""
    epochs = max((int(r["epoch"]) for r in rows), default=0)
    shown = [r for r in rows if shown_epoch(int(r["epoch"]), epochs)]
    return shown, f"{len(shown)} of {len(rows)} epochs (all in metrics.csv)" if len(shown) < len(rows) else None


def print_epochs(rows: list[dict]) -> None:
    """The epochs table, fitted to the console: every shown number whole."""
    shown, title = epochs_table(rows)
    print_fitted(shown, METRIC_COLUMNS, EPOCH_COLUMNS_DROPPED, tuple(METRIC_COLUMNS), title, "metrics.csv")


def markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub Markdown table of rows, each value shown as `table()` shows it."""
    columns = columns or (list(rows[0]) if rows else [])

    def cell(text: str) -> str:  # a label may hold '|', which would start another column
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(fmt(c, r.get(c))) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
