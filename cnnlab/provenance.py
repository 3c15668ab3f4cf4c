"""Where and with what a run or a bench ran: the device's name, the CPU model, the versions and the git commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import cnnlab
from cnnlab import runs


PACKAGE_DIR = Path(cnnlab.__file__).parent


def _git(where: Path, *args: str) -> str | None:
    """git's output for args, run in where; None outside a git checkout or without git."""
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def tracked(where: Path = PACKAGE_DIR) -> bool:
    """Whether git tracks files in where: cnnlab installed into a virtual environment inside another
    project's checkout (ignored there) lies in a git work tree whose commit says nothing of cnnlab."""
    return bool(_git(where, "ls-files", "--", "."))


def git_state(where: Path = PACKAGE_DIR) -> dict:
    """A run's or a bench's git_commit and git_dirty, asking git once whether it tracks where."""
    tracks = tracked(where)
    return {"git_commit": _commit(where) if tracks else None, "git_dirty": _dirty(where) if tracks else None}


def _commit(where: Path) -> str | None:
    """The commit of the checkout where is tracked in; None without git."""
    out = _git(where, "rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


def _dirty(where: Path) -> bool | None:
    """Whether the files in where differ from their commit: changed, staged, deleted or new and not
    ignored, or changed since this process imported them (then they are not the code that runs,
    and the commit alone does not say what code ran)."""
    # no optional locks: status would otherwise rewrite the index, and a `git commit` run at that
    # moment in the same checkout fails on its index.lock
    out = _git(where, "--no-optional-locks", "status", "--porcelain", "--", ".")
    if out is None:
        return None
    # a process runs the source it imported: files edited (or committed, checked out) since then
    # leave the commit saying nothing of the code that ran (a study's later cells, one process)
    return bool(out.strip()) or (Path(where) == PACKAGE_DIR and cnnlab.source_changed())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's instruction-set flags from /proc/cpuinfo (Linux), else empty."""
    return _cpuinfo("flags") or ""


def _cpuinfo(field: str) -> str | None:
    """The first processor's value of field in /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def provenance(device: torch.device) -> dict:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cnnlab_version": cnnlab.__version__,
        "python_version": platform.python_version(),
        **git_state(),
        **runs.owner(),
        "threads": torch.get_num_threads(),
    }

