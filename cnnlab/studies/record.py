"""A study directory: summary.json with a true status, tables as CSV + Markdown, figures, cells/.

The directory is made with runs.new_run_dir(kind="study"); each cell's own run directory goes
under <study>/cells, and summary.json lists their paths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from cnnlab import runs

CELLS = "cells"


class StudyRecord:
    def __init__(self, root: Path, name: str, **summary):
        self.path = runs.new_run_dir(root, name, kind="study")
        self.cells = self.path / CELLS
        self.summary = {"name": name, "kind": "study", "status": "running", "error": None, "started_at": runs.utc_now(), **runs.owner(), **summary}
        self.files: list[str] = []
        self.save()

    def save(self) -> None:
        runs.write_json(self.path / runs.SUMMARY, {**self.summary, "files": self.files})

    def update(self, **values) -> None:
        self.summary.update(values)
        self.save()

    @contextlib.contextmanager
    def running(self):
        """Mark the study completed, failed or interrupted, whichever way the block ends."""
        try:
            yield self
        except KeyboardInterrupt:  # also experiment.Interrupted (SIGINT/SIGTERM)
            self.update(status="interrupted", error="stopped by a signal", finished_at=runs.utc_now())
            raise
        except BaseException as e:
            self.update(status="failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__, finished_at=runs.utc_now())
            raise
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
