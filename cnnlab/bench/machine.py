"""What the machine is and what it can do: CPU model, load, peak memory, measured matmul peak."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import torch

from cnnlab.flops import matmul_flops
from cnnlab.provenance import cpu_model, device_name


def machine_info(device: torch.device) -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
    }


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class PeakMemory:
    """Peak memory of one measured stretch.

    CUDA: torch.cuda.max_memory_allocated (tensors only). CPU: the process's peak resident set
    (VmHWM), whose high-water mark Linux resets through /proc/self/clear_refs; where that is not
    possible, getrusage's ru_maxrss, which only ever grows over the process's life (`kind` says which).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max allocated" if device.type == "cuda" else "process peak RSS"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "process peak RSS (ru_maxrss, since start)"
        self.mib = float("nan")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = _vm_hwm_mib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def _vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_gflops(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 3) -> float:
    """Best GFLOP/s of an n x n matrix product, the machine's practical compute ceiling."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms up (allocations, kernel selection)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return matmul_flops(n) / best / 1e9


def matmul_peaks(device: torch.device, n: int, dtype: torch.dtype = torch.float32) -> dict[int, float]:
    """peak_gflops by thread count: with 1 thread and with all of torch's threads (CPU); on CUDA one
    value, under the key 0. A case is compared with the peak for the threads it trained with."""
    if device.type == "cuda":
        return {0: peak_gflops(device, n, dtype)}
    threads = torch.get_num_threads()
    peaks = {}
    try:
        for t in sorted({1, threads}):
            torch.set_num_threads(t)
            peaks[t] = peak_gflops(device, n, dtype)
    finally:
        torch.set_num_threads(threads)
    return peaks
