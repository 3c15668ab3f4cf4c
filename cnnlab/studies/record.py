"""A study directory: summary.json with a true status, tables as CSV + Markdown, figures, cells/.

The directory is made with runs.new_run_dir(kind="study"); each cell's own run directory goes
under <study>/cells, and summary.json lists their paths. plan.json holds what the study runs (its
cells' configs and options), so that `--resume` can finish an interrupted or failed study.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

from cnnlab import runs
from cnnlab.config import Strict, validate
from cnnlab.errors import CnnlabError, ConfigError, RunError, first_line, in_run, shell_word

CELLS = "cells"
PLAN = "plan.json"
LABELS = {"compare": ("model", "permuted", "seed"), "shift-sweep": ("model",)}  # what each study's cells carry


class PlannedCell(Strict):
    labels: dict[str, Any]  # what the study's table groups by (model, permuted, seed)
    config: dict[str, Any]  # the cell's resolved config


class ReusedRun(Strict):
    label: str
    path: str


class Plan(Strict):
    """plan.json: what a study runs, written before its first cell trains."""

    name: str
    cells: list[PlannedCell]
    data_dir: Optional[str] = None  # the --data-dir it was started with
    datasets: str = ""  # compare: the members' datasets, comma-separated
    options: dict[str, Any] = {}  # shift-sweep: its sweep options
    device: Optional[str] = None  # shift-sweep: --device, for the reused runs
    reused: list[ReusedRun] = []  # shift-sweep: --from-run models


class StudyRecord:
    def __init__(self, root: Path, name: str, plan: dict | None = None, **summary):
        """A new study directory: plan.json first, then summary.json; a study whose plan cannot be
        written (a full disk) is not left 'running' with nothing to resume from."""
        self.path = runs.new_run_dir(root, name, kind="study")
        self.cells = self.path / CELLS
        if plan is not None:
            runs.write_json(self.path / PLAN, plan)
        self.summary = {"name": name, "kind": "study", "status": "running", "error": None, "started_at": runs.utc_now(), **runs.owner(), **summary}
        self.files: list[str] = []
        self.resumed = False
        self.save()

    @classmethod
    def reopen(cls, path: Path, study: str) -> "StudyRecord":
        """The record of an existing `study` directory (compare, shift-sweep), to resume it."""
        path = Path(path)
        runs.must_be_a_directory(path, study)
        summary = runs.read_json(path / runs.SUMMARY) if (path / runs.SUMMARY).is_file() else {}
        runs.resume_elsewhere(path, study)
        if summary.get("kind") != "study" or summary.get("study") != study or not (path / PLAN).is_file():
            raise RunError(f"not a {study} study directory that can be resumed: {path}")
        if summary.get("status") == "completed":
            raise RunError(f"{path} is already complete: nothing to resume")
        self = cls.__new__(cls)
        self.path, self.cells, self.files, self.resumed = path, path / CELLS, [], True
        summary.pop("files", None)
        self.summary = {**summary, "status": "running", "error": None, "finished_at": None, **runs.owner()}
        return self

    @property
    def plan(self) -> dict:
        """plan.json, checked (a hand-edited one that does not fit is one ConfigError line)."""
        source = self.path / PLAN
        plan = validate(runs.read_json(source), Plan, str(source))
        labels = LABELS.get(self.summary.get("study"), ())
        for i, cell in enumerate(plan.cells):
            missing = [k for k in labels if k not in cell.labels]
            if missing:
                raise ConfigError(f"{source}: cells[{i}].labels has no {', '.join(missing)}")
        if not plan.cells and not plan.reused:
            raise ConfigError(f"{source}: no cells to run")
        return plan.model_dump()

    def save(self) -> None:
        runs.write_json(self.path / runs.SUMMARY, {**self.summary, "files": self.files})

    def update(self, **values) -> None:
        self.summary.update(values)
        self.save()

    @contextlib.contextmanager
    def running(self):
        """Hold the study's lock (one process runs a study at a time) and mark it completed, failed
        or interrupted, whichever way the block ends; the last two say how to resume it, and carry
        the study directory (see errors.in_run), not a cell's run directory. Its cells cut off on the
        way (their Ray workers gone, the block left) are settled as a sweep's trials are."""
        from cnnlab.engine import NonFiniteLoss
        from cnnlab.interrupts import Interrupted, interruptible

        resume = f"cnnlab {self.summary.get('study')} --resume {shell_word(self.path)}"
        with runs.training_lock(self.path), interruptible() as signals:  # SIGTERM and SIGHUP, too, mark the study interrupted
            if self.resumed:  # what a study killed outright (SIGKILL, a power cut) left, cleared as a stopped one clears it
                runs.remove_stale_writes(self.path)
                runs.settle_cut_off(self.cells, f"the study's process was gone before this run finished; continue with: {resume}")
            self.save()  # status running, this process as the owner
            try:
                yield self
            except KeyboardInterrupt as e:  # also Interrupted (interrupts.STOP_SIGNALS)
                stopped = Interrupted.of(e, "study", f"finished cells are kept; continue with: {resume}", signals.received)
                self.update(status="interrupted", error=str(stopped), finished_at=runs.utc_now())  # what show says, as a sweep's
                runs.settle_cut_off(self.cells, f"the study was interrupted; continue with: {resume}")
                raise in_run(stopped, self.path) from None
            except BaseException as e:
                self.update(status="failed", error=first_line(e), finished_at=runs.utc_now())
                runs.settle_cut_off(self.cells, f"the study failed before this run finished: {first_line(e)}")
                if isinstance(e, NonFiniteLoss):  # the planned configs would diverge again
                    raise in_run(NonFiniteLoss(f"{e}; a resume replays the same configs: start a new study with other settings"), self.path) from None
                if isinstance(e, CnnlabError):
                    raise in_run(type(e)(f"{e} (finished cells are kept; once fixed, continue with: {resume})"), self.path) from None
                raise in_run(e, self.path)
            self.update(status="completed", finished_at=runs.utc_now())

    def write_table(self, stem: str, rows: list[dict], markdown: str | None = None) -> None:
        """stem.csv (the raw numbers) and, when given, stem.md (the readable table)."""
        runs.write_table(self.path / f"{stem}.csv", rows)
        self.files.append(f"{stem}.csv")
        if markdown is not None:
            runs.atomic_write(self.path / f"{stem}.md", markdown)
            self.files.append(f"{stem}.md")

    def write_figure(self, name: str, fig) -> Path:
        from cnnlab.figures import save

        path = self.path / name
        save(fig, path)
        self.files.append(name)
        return path
