"""Turn a list of resolved configs into runs: the one place studies and sweeps start training.

Cells run one after another in this process; `address` (Ray) spreads them over a cluster when given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.config import Config


@dataclass
class Cell:
    """One run of a study: its config plus the labels the study's table groups by."""

    cfg: Config
    labels: dict


def run_cells(
    cells: list[Cell],
    *,
    runs_dir: Path,
    data_dir=None,
    address: str | None = None,
    on_done: Callable | None = None,
) -> list:
    """Run every cell and return their RunResults in the cells' order.

    Without `address` the cells run one after another in this process; with it (local, auto,
    HOST:PORT) each cell is a Ray task on that cluster and on_done is called as they finish.
    """
    if address is not None:
        from cnnlab.ray_backend import run_cells_on_ray

        return run_cells_on_ray(cells, runs_dir=runs_dir, data_dir=data_dir, address=address, on_done=on_done)
    from cnnlab.experiment import run

    results = []
    for cell in cells:
        result = run(cell.cfg, runs_dir=runs_dir, data_dir=data_dir)
        results.append(result)
        if on_done is not None:
            on_done(cell, result)
    return results
