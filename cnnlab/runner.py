"""Turn a list of resolved configs into runs: the one place studies and sweeps start training.

Cells run one after another in this process; `address` (Ray) spreads them over a cluster when given.
A resumed study passes each cell's earlier run (previous_runs): a completed one is taken as it is,
any other is resumed from its last complete epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.config import Config
from cnnlab.errors import ConfigError


@dataclass
class Cell:
    """One run of a study: its config plus the labels the study's table groups by."""

    cfg: Config
    labels: dict


def continuable(run: Path) -> bool:
    """Whether an earlier attempt's run can be taken or resumed: completed, or with a checkpoint, or
    without a finished epoch yet (it starts afresh in place). A run trained without checkpoints and
    stopped after some epochs cannot go on: its cell starts again in a new directory."""
    from cnnlab.runs import CHECKPOINT, SUMMARY, read_json, read_metrics

    summary = read_json(run / SUMMARY)
    return summary.get("status") == "completed" or (run / CHECKPOINT).is_file() or read_metrics(run).empty


def check_here(configs: list[Config], data_dir=None, new: list[Config] | None = None) -> None:
    """Every device and dataset file the configs need is on this machine (DataError, ConfigError), and
    the subsets of those that start a run (new, default all) fit the splits here: a continued run
    trains as an earlier cnnlab accepted its config (see load_splits)."""
    from cnnlab.data import check_files, check_subsets, resolve_data_dir
    from cnnlab.experiment import resolve_device

    for cfg in configs:
        resolve_device(cfg.device)
    # once per dataset and folder, not per cell (a study's seeds and members mostly share one)
    for files in dict.fromkeys((cfg.dataset.name, resolve_data_dir(data_dir, cfg.dataset.data_dir), cfg.dataset.download) for cfg in configs):
        check_files(*files)
    several = len({cfg.name for cfg in configs}) > 1
    for cfg in configs if new is None else new:  # among configs: their files are checked above
        try:
            check_subsets(cfg, data_dir)
        except ConfigError as e:  # among a study's members, say whose subset it is
            raise ConfigError(f"{cfg.name}: {e}" if several else str(e)) from None


def previous_runs(cells: list[Cell], runs_dir: Path) -> list[Path | None]:
    """Each cell's run directory under runs_dir from an earlier attempt (its config.yaml is the
    cell's config) that can be taken or continued, or None. Each directory serves one cell; a later
    attempt's wins. The configs are compared as validated, so a run written by an earlier cnnlab,
    whose config.yaml lacks keys added since (at their defaults), still matches."""
    from cnnlab.config import config_to_dict, load_config
    from cnnlab.errors import CnnlabError
    from cnnlab.runs import CONFIG

    found: list[tuple[Path, dict]] = []
    for path in sorted(Path(runs_dir).glob("*/" + CONFIG), reverse=True):  # newest first (names start with the time)
        try:
            if continuable(path.parent):
                found.append((path.parent, config_to_dict(load_config(path, stored=True))))
        except CnnlabError:  # killed before its config or summary was whole, or no longer valid: the cell starts afresh
            continue
    previous: list[Path | None] = []
    for cell in cells:
        wanted = config_to_dict(cell.cfg)
        match = next((i for i, (_, data) in enumerate(found) if data == wanted), None)
        previous.append(found.pop(match)[0] if match is not None else None)
    return previous


def finished_result(path: Path):
    """The RunResult of a completed run, read from its directory; None when it did not complete."""
    from cnnlab.experiment import RunResult
    from cnnlab.runs import RESULTS, SUMMARY, read_json, read_metrics

    summary = read_json(path / SUMMARY, RESULTS)
    if summary.get("status") != "completed":
        return None
    return RunResult(path, summary, read_metrics(path).to_dict("records"))


def run_cells(
    cells: list[Cell],
    *,
    runs_dir: Path,
    data_dir=None,
    address: str | None = None,
    on_done: Callable | None = None,
    previous: list[Path | None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list:
    """Run every cell and return their RunResults in the cells' order.

    Without `address` the cells run one after another in this process; with it (local, auto,
    HOST:PORT) each cell is a Ray task on that cluster and on_done is called as they finish.
    previous: each cell's run from an earlier attempt, taken when completed, else resumed.
    on_note: the first hint the cells run here give (a machine too crowded for their threads), once.
    """
    previous = previous or [None] * len(cells)
    results: list = [finished_result(p) if p is not None else None for p in previous]
    for cell, result in zip(cells, results):
        if result is not None and on_done is not None:
            on_done(cell, result)
    todo = [i for i, r in enumerate(results) if r is None]
    if address is not None and todo:
        from cnnlab.ray_backend import run_cells_on_ray

        done = run_cells_on_ray([cells[i] for i in todo], runs_dir=runs_dir, data_dir=data_dir, address=address,
                                on_done=on_done, resume=[previous[i] for i in todo])
        for i, result in zip(todo, done):
            results[i] = result
        return results
    from cnnlab.experiment import run

    noted = False

    def note_once(text: str) -> None:  # a crowded machine is said once a study, not once a cell
        nonlocal noted
        if not noted:
            noted = True
            on_note(text)

    for i in todo:
        results[i] = run(cells[i].cfg, runs_dir=runs_dir, data_dir=data_dir, resume=previous[i], on_note=note_once if on_note else None)
        if on_done is not None:
            on_done(cells[i], results[i])
    return results
