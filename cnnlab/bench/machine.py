"""What the machine is and what it can do: CPU model, load, peak memory, measured compute peak."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

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


def cpu_seconds_used() -> float | None:
    """CPU seconds all of the machine's cores have spent working since it started (/proc/stat: user,
    nice, system, interrupts and time the hypervisor gave to others; not idle or I/O wait), or None
    where the OS has no /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def others_share(used: float | None, own: float, seconds: float) -> float | None:
    """How many cores' worth of other work ran beside the bench during its seconds: the machine's CPU
    seconds (used) less the bench's own (own), per second; None when the machine's are unknown."""
    return None if used is None or seconds <= 0 else max(0.0, (used - own) / seconds)


class Stretch:
    """A stretch of this process's life, from its creation: wall seconds, the process's own CPU
    seconds (all its threads), and the other work that ran beside it (others_share)."""

    def __init__(self):
        self.t0, self.cpu0, self.used0 = time.perf_counter(), time.process_time(), cpu_seconds_used()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def own(self) -> float:
        return time.process_time() - self.cpu0

    def others(self) -> float | None:
        used = cpu_seconds_used()
        return others_share(None if used is None or self.used0 is None else used - self.used0, self.own(), self.seconds())


def was_busy(cores: int, before: float | None, others: float | None) -> bool:
    """Whether other work shared the machine with the bench: the other work beside it (others_share)
    above one core's worth (above 0 on a 1-core machine). The 1-minute load average before it decides
    only where that is unknown: it still holds work that has just ended (a bench started right after
    another read 1.2 on 16 cores with 0.1 cores' worth of other work beside it). Unknown values (None)
    say nothing."""
    seen = others if others is not None else before
    return seen is not None and seen > min(1, cores - 1)


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


def dense_kernels(device: torch.device, n: int, dtype: torch.dtype) -> dict[str, tuple[int, Callable[[], object]]]:
    """Large dense kernels by name, each as (FLOPs per call, the call).

    The machine's compute ceiling is the fastest of them, not one library's matrix product: on AMD
    CPUs, MKL's float32 product (torch.mm) reaches about 40% of what oneDNN's convolutions do, so a
    ceiling from it alone put TrashNet's training at 120% of "the peak".
    """
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype).contiguous(memory_format=_layout(shape))

    a, b = randn(n, n), randn(n, n)
    x1, w1 = randn(1, n, 32, n // 32), randn(n, n, 1, 1)  # the same product, by the convolution library
    batch = n // 32  # a CNN's own kernel: 3x3, 256 channels, 16x16 maps
    x3, w3 = randn(batch, 256, 16, 16), randn(256, 256, 3, 3)
    return {
        "matrix product": (matmul_flops(n), lambda: torch.mm(a, b)),
        "1x1 convolution": (matmul_flops(n), lambda: F.conv2d(x1, w1)),
        "3x3 convolution": (2 * batch * 16 * 16 * 256 * 256 * 9, lambda: F.conv2d(x3, w3, padding=1)),
    }


def _layout(shape: tuple[int, ...]) -> torch.memory_format:
    return torch.channels_last if len(shape) == 4 else torch.contiguous_format  # as cnnlab trains


def best_gflops(device: torch.device, flops: int, call: Callable[[], object], repeats: int = 3) -> float:
    """GFLOP/s of call's fastest run of repeats, after one warm-up run (allocations, kernel choice)."""
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def compute_peaks(
    device: torch.device, n: int, dtype: torch.dtype = torch.float32, threads: tuple[int, ...] = (),
) -> dict[int, dict[str, float]]:
    """GFLOP/s of each dense kernel, by thread count: with 1 thread, with all of torch's threads and
    with each of threads (the counts the cases train with, CPU); on CUDA under the key 0. A case is
    compared with the best kernel at its own thread count."""
    kernels = dense_kernels(device, n, dtype)

    def measure() -> dict[str, float]:
        return {name: best_gflops(device, flops, call) for name, (flops, call) in kernels.items()}

    if device.type == "cuda":
        return {0: measure()}
    default = torch.get_num_threads()
    peaks = {}
    try:
        for t in sorted({1, default, *threads}):
            torch.set_num_threads(t)
            peaks[t] = measure()
    finally:
        torch.set_num_threads(default)
    return peaks
