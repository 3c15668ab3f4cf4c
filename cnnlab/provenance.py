"""Where and with what a run or a bench ran: the device's name, the CPU model, the versions and the git commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import cnnlab
from cnnlab import runs


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(cnnlab.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        "git_commit": git_commit(),
        **runs.owner(),
        "threads": torch.get_num_threads(),
    }

