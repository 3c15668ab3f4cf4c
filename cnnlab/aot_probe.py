"""Loading a step compiled ahead of time (aot_step.py), and trying a new one in a child process first.

Why the child: a compiled step that crashes when loaded takes the process with it, mid-run and
without a word. torch 2.11 did that on a 16-core Xeon (SIGSEGV inside its package loader, with the
step just compiled there); the cause was not established. A step that fails in its test process is
never loaded by cnnlab's own (aot_step.py then trains with torch.compile's step instead).

The child imports what the parent would (the parent's sys.path, whatever the working directory
holds) and loads the step in PATH, then runs it once on zeros shaped as SPECS (JSON: [shape,
stride, dtype] per input) with THREADS threads; exit 0 when it ran. It imports torch alone, not
the rest of cnnlab (a second and a half instead of three).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

PROBE_SECONDS = 120  # a load and one step take about a second; longer is a hang
# deaths that are the step's own doing (a bad load, a bad instruction); not SIGKILL (the kernel's
# out-of-memory killer), SIGTERM or SIGINT (someone else's), after which the step is not suspect
FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
# python -c puts the working directory ('') first on the path: gone before anything is imported (a
# json.py there was imported), then the parent's path
CHILD = (
    "import sys; sys.path[:1] == [''] and sys.path.pop(0); import json, os; sys.path[:] = json.loads(os.environ['CNNLAB_PROBE_PATH']); "
    "from cnnlab.aot_probe import main; main(sys.argv[1:])"
)


def load(path) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """The compiled step in path, as a function of a list of tensors returning a list of tensors.
    torch's own loader, without importing inductor (a second in a new process) where it can."""
    aoti = getattr(torch._C, "_aoti", None)
    if aoti is not None and hasattr(aoti, "AOTIModelPackageLoader"):
        return aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1).boxed_run
    from torch import _inductor as inductor

    model = inductor.aoti_load_package(str(path))
    return lambda tensors: model(*tensors)


def crashes(path: Path, inputs: list[torch.Tensor]) -> tuple[str, bool] | None:
    """Why the compiled step in path fails in a new process that loads it and runs it once on zeros
    shaped as inputs (killed by SIGSEGV, its error's last line, a hang), and whether that is the
    step's own fault (a fault signal: FAULTS); None when it ran."""
    specs = [[list(t.shape), list(t.stride()), str(t.dtype).removeprefix("torch.")] for t in inputs]
    env = {**os.environ, "CNNLAB_PROBE_PATH": json.dumps(sys.path)}
    # "cnnlab.aot_probe" in the command line: what the process is, to ps and to the tests
    command = [sys.executable, "-c", CHILD, str(path), json.dumps(specs), str(torch.get_num_threads()), "cnnlab.aot_probe"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=PROBE_SECONDS, env=env)
    except subprocess.TimeoutExpired:
        return f"it had not run a step after {PROBE_SECONDS} s", False
    except OSError:  # no Python to start (an embedded interpreter): nothing is known against the step
        return None
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        try:
            died = signal.Signals(-done.returncode)
        except ValueError:
            return f"killed by signal {-done.returncode}", False
        return f"killed by {died.name}", died in FAULTS
    last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "")
    return last or f"exit status {done.returncode}", False


def main(argv: list[str]) -> None:
    path, specs, threads, _ = argv
    torch.set_num_threads(int(threads))
    tensors = [torch.empty_strided(shape, stride, dtype=getattr(torch, dtype)).zero_() for shape, stride, dtype in json.loads(specs)]
    load(path)(tensors)

