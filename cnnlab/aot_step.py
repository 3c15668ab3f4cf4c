"""The CPU training step compiled ahead of time and kept on disk (train.compile on the CPU, for models
that are a function of their parameters alone: no BatchNorm statistics, no dropout).

Why: torch.compile's step (compiled_step.py) is traced and compiled again in every new process, 2 to
4 s for the study models even when inductor's caches hold its kernels: more than a one-epoch run of
study A's CNN saves, and paid again by every trial of a sweep (each a process of its own). Here the
forward and backward pass are traced once into a graph of ATen ops (make_fx over torch.func),
exported and compiled by AOTInductor into a shared library kept in cnnlab's cache
(`$CNNLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/cnnlab`, else `~/.cache/cnnlab`), which a later process
with the same step loads in milliseconds.

What the graph computes is what compiled_step.py's does: the model's function, with each convolution
and the 2x2 max-pooling after it as one convolution over 2x2 pixel blocks (conv_pool.py), and the
gradients of the parameters the loss reaches. The update is the config's own optimizer (its fused
kernel), run after the graph as after an ordinary step, so checkpoints, resumes and schedules see
nothing new.

A cached library is only used for the very step it was compiled for: its file is named by a hash of
everything the graph depends on (below, step_key): cnnlab's and torch's versions and cnnlab's source,
the CPU's model, instruction set and threads, the model's modules and their settings, the
parameters' shapes and layouts, the batch's, and the loss.

A step just compiled is first loaded and run once in a child process (aot_probe.py): one that
fails there is never loaded here, and the run trains with torch.compile's step (compiled_step.py)
instead. Where the child died of a fault (SIGSEGV...), a file KEY.crashed beside the steps sends
later runs of that step straight to torch.compile's step for a day; then it is compiled and tried
again. A step taken from the cache was tried when it was compiled, by the same torch on the same CPU.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

import cnnlab
from cnnlab import runs
from cnnlab.aot_probe import crashes, load
from cnnlab.compiled_step import CompiledStep, compile_error, reached_parameters
from cnnlab.conv_pool import with_conv_max_pools
from cnnlab.provenance import cpu_flags, cpu_model
from cnnlab.engine import one_line_if_batch_too_small
from cnnlab.errors import RunError

CACHE_BYTES = 256 * 2**20  # the cache is pruned to this size, the steps used longest ago first (a step: about 2 MB)
STALE_SECONDS = 24 * 3600  # a partial file this old is from a write cut short (a killed process), not one being written;
# a crash recorded this long ago is tried again (a library or driver may have been mended since)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def takes_model(model: nn.Module, amp: str) -> bool:
    """Whether model's training step can be compiled ahead of time: a function of its parameters
    alone (no buffers to update, no random numbers to draw), in float32."""
    return amp == "none" and not any(True for _ in model.buffers()) and not any(isinstance(m, DROPOUTS) for m in model.modules())


def cache_dir() -> Path:
    """Where compiled steps are kept."""
    root = os.environ.get("CNNLAB_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab"
    return Path(root) / "steps"


class AotStep:
    """Calls run one full batch's training step, update included, and return (outputs, loss)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, loss_key: tuple, batch_size: int):
        self.model, self.optimizer, self.loss_fn, self.loss_key, self.batch_size = model, optimizer, loss_fn, loss_key, batch_size
        self._seconds = 0.0  # time spent compiling or loading compiled steps
        self._graphs = 0  # steps compiled by this process
        self.loaded = 0  # steps taken from the cache
        self._fallback: CompiledStep | None = None  # torch.compile's step, where this one crashed (aot_probe.py)
        self.crashed: str | None = None  # why this step failed in its test process, where it did
        self._compute, _ = with_conv_max_pools(model)
        self._runs: dict[tuple, object] = {}  # a batch's signature -> the compiled step's runner
        self._trained: list[nn.Parameter] | None = None  # the parameters the loss reaches

    @property
    def compile_seconds(self) -> float:
        """Time spent compiling or loading compiled steps, torch.compile's after a crash included."""
        return self._seconds + (self._fallback.compile_seconds if self._fallback else 0.0)

    @property
    def graphs(self) -> int:
        """Steps compiled by this process, torch.compile's after a crash included."""
        return self._graphs + (self._fallback.graphs if self._fallback else 0)

    def takes(self, xb: torch.Tensor) -> bool:
        """Whether xb is a batch of the size the step is for (an epoch's short last one is not)."""
        return len(xb) == self.batch_size

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fallback is not None:
            return self._fallback(xb, yb)
        if self._trained is None:  # now, not at setup: the parameters a resume loads are the same tensors
            with one_line_if_batch_too_small(len(xb)):
                reached = reached_parameters(self.model, self.loss_fn, xb, yb)
            named = list(self.model.named_parameters())
            self._trained = [p for _, p in named if p in reached]
            self._names = [n for n, p in named if p in reached], [n for n, p in named if p not in reached]
            # detached views: the graph's inputs, which the optimizer's updates reach
            self._inputs = [p.detach() for p in self._trained] + [p.detach() for _, p in named if p not in reached]
        signature = (xb.shape, xb.stride(), xb.dtype, yb.shape, yb.stride(), yb.dtype)
        run = self._runs.get(signature)
        if run is None:
            t0 = time.perf_counter()
            run = self._load_or_compile(xb, yb)
            self._seconds += time.perf_counter() - t0
            if run is None:  # it crashed when tried: torch.compile's step, from this step on
                self._fallback = CompiledStep(self.model, self.optimizer, self.loss_fn, "none", self.batch_size)
                return self._fallback(xb, yb)
            self._runs[signature] = run
        out, loss, *grads = run([*self._inputs, xb, yb])
        for p, g in zip(self._trained, grads):
            p.grad = g
        self.optimizer.step()
        return out, loss

    def _load_or_compile(self, xb: torch.Tensor, yb: torch.Tensor):
        """The step's runner, from the cache or compiled; None where it crashes when loaded."""
        key = step_key(self._compute, self._names, self._inputs, xb, yb, self.loss_key)
        path = None if key is None else cache_dir() / f"{key}.pt2"  # None: compiled for this run alone
        crashed = recorded_crash(path)
        if crashed is not None:
            return self._crashed(path, f"{crashed}, recorded in {path.with_suffix(CRASHED)}", crashed)
        try:
            run = load(path) if path is not None and path.is_file() else None
        except (RuntimeError, OSError):  # a file the loader cannot read (cut short, another torch's),
            run = None  # or a cache folder this user cannot enter: compile anew
        if run is not None:
            self.loaded += 1
            with contextlib.suppress(OSError):  # used now: the last the pruning removes
                os.utime(path)
            return run
        try:
            export = self._export(xb, yb)
            run = compile_to(export, path, [*self._inputs, xb, yb])
        except StepCrashed as e:
            if e.lasting:
                record_crash(path, e.why)
            return self._crashed(path, e.why, e.why)
        except Exception as e:  # the compiler's (no working C++ compiler), or the model's own while traced
            raise compile_error(e, len(xb)) from None
        self._graphs += 1
        return run

    def _crashed(self, path: Path | None, told: str, why: str) -> None:
        """Keep why the step crashed, say so (told) once a process, and give no runner."""
        self.crashed = why
        tell_crash(path, told)
        return None

    def _export(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.export.ExportedProgram:
        """The step as an exported program of ATen ops: (inputs..., xb, yb) -> (outputs, loss, gradients...)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        trained, fixed = self._names
        n = len(trained)

        def loss_and_outputs(params: dict, constants: dict, xb: torch.Tensor, yb: torch.Tensor):
            out = functional_call(self._compute, {**params, **constants}, (xb,))
            return self.loss_fn(out, yb), out

        def step(*tensors):
            params, constants = dict(zip(trained, tensors[:n])), dict(zip(fixed, tensors[n:-2]))
            grads, (loss, out) = grad_and_value(loss_and_outputs, has_aux=True)(params, constants, *tensors[-2:])
            # each gradient laid out as its parameter (channels-last convolutions): the optimizer's
            # fused kernel runs over both as flat memory
            laid_out = (torch.empty_like(params[name]).copy_(grads[name]) for name in trained)
            return (out.detach(), loss.detach(), *laid_out)

        inputs = (*self._inputs, xb, yb)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
        return torch.export.export(_Graph(make_fx(step)(*inputs)), inputs)


class _Graph(nn.Module):
    """A traced graph as the module torch.export takes."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        self.graph = graph

    def forward(self, *tensors):
        return self.graph(*tensors)


def step_key(compute: nn.Module, names: tuple, inputs: list, xb: torch.Tensor, yb: torch.Tensor, loss_key: tuple) -> str | None:
    """A hash of everything the compiled step depends on; None when the source it runs is not known
    (see source_hash)."""
    from cnnlab import __version__

    source = source_hash()
    if source is None:
        return None

    def described(t: torch.Tensor) -> list:
        return [list(t.shape), list(t.stride()), str(t.dtype)]

    facts = {
        "cnnlab": __version__,
        "source": source,
        "torch": torch.__version__,
        # inductor compiles for this very CPU (-march=native): another CPU model may lack its instructions
        "cpu": [torch.backends.cpu.get_cpu_capability(), cpu_identity()],
        "threads": torch.get_num_threads(),  # inductor writes them into its loops
        "model": repr(compute),
        # what a module's repr may leave out (a scale factor, a padding) and its forward may use
        "settings": [module_settings(m) for m in compute.modules()],
        "classes": class_sources(compute),
        "trained": names[0],
        "fixed": names[1],
        "inputs": [described(t) for t in [*inputs, xb, yb]],
        "loss": list(loss_key),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def module_settings(module: nn.Module) -> list:
    """A module's class and its plain, public attributes (numbers, strings, tuples of them)."""
    def plain(v) -> bool:
        return isinstance(v, (bool, int, float, str, type(None))) or (isinstance(v, (tuple, list)) and all(map(plain, v)))

    settings = {k: repr(v) for k, v in vars(module).items() if not k.startswith("_") and k != "training" and plain(v)}
    return [f"{type(module).__module__}.{type(module).__qualname__}", settings]


@functools.cache
def cpu_identity() -> str:
    """The CPU's model and instruction-set flags."""
    return f"{cpu_model()} | {cpu_flags()}"


def class_sources(model: nn.Module) -> dict:
    """A hash of the source file of each of model's module classes that is not torch's own (a model
    defined outside cnnlab: its forward code is not in cnnlab's source)."""
    files = {inspect.getsourcefile(type(m)) for m in model.modules() if not type(m).__module__.startswith("torch.")}
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in sorted(filter(None, files))}


def source_hash() -> str | None:
    """A hash of cnnlab's Python source as this process imported it: the models' forward code and the
    step's are in it. None when the files have changed since (an edit, a git pull): the step it would
    compile is the old code's, and a hash of the files the new code's."""
    return None if cnnlab.source_changed() else cnnlab.IMPORTED_SOURCE


class StepCrashed(Exception):
    """A step just compiled failed when a child process loaded and ran it (aot_probe.crashes);
    lasting: by the step's own fault, so that later runs are not to try it again."""

    def __init__(self, why: str, lasting: bool):
        super().__init__(why)
        self.why, self.lasting = why, lasting


def compile_to(program: torch.export.ExportedProgram, path: Path | None, inputs: list[torch.Tensor]):
    """Compile program with AOTInductor, try it in a child process on zeros shaped as inputs (raising
    StepCrashed where that fails) and load it, keeping a copy at path (runs.atomic_write: written
    whole, then renamed into place) for later processes. Where the cache cannot be written, or path
    is None, the step serves this run alone."""
    from torch import _inductor as inductor

    with tempfile.TemporaryDirectory(prefix="cnnlab-step-") as scratch:
        built = inductor.aoti_compile_and_package(program, package_path=str(Path(scratch) / "step.pt2"))
        failed = crashes(built, inputs)
        if failed is not None:
            raise StepCrashed(*failed)
        run = load(built)  # from here, not from the cache: that folder may be deleted at any time
        if path is None:
            return run
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            runs.atomic_write(path, Path(built).read_bytes())
        except (OSError, RunError):  # no cache folder, no room in it, another user's file in the way
            return run
    prune(path.parent, keep=path)
    return run


def prune(folder: Path, keep: Path, limit: int = CACHE_BYTES) -> None:
    """Delete the steps used longest ago (a load touches its file) until folder holds at most limit
    bytes, never keep; and partial files a write cut short left. Files that go meanwhile (another
    process pruning) are passed over."""
    steps, total, now = [], 0, time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                stat = entry.stat()
                if entry.name.startswith(".") or entry.name.endswith(CRASHED):
                    if now - stat.st_mtime > STALE_SECONDS:
                        os.unlink(entry.path)
                elif entry.name.endswith(".pt2"):
                    total += stat.st_size
                    if entry.path != str(keep):
                        steps.append((stat.st_mtime, stat.st_size, entry.path))
    for _, size, path in sorted(steps):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size


CRASHED = ".crashed"  # beside a step's name: it crashed when tried, and why


def recorded_crash(path: Path | None) -> str | None:
    """Why the step that path names crashed when it was tried, within STALE_SECONDS; else None."""
    if path is None:
        return None
    marker = path.with_suffix(CRASHED)
    try:
        if time.time() - marker.stat().st_mtime > STALE_SECONDS:
            return None
        return marker.read_text().strip() or "no reason recorded"
    except (OSError, UnicodeDecodeError):
        return None


def record_crash(path: Path | None, why: str) -> None:
    """Record beside path that its step crashed (when the cache can be written: else each run tries it)."""
    if path is not None:
        with contextlib.suppress(OSError, RunError):
            path.parent.mkdir(parents=True, exist_ok=True)
            runs.atomic_write(path.with_suffix(CRASHED), why + "\n")


_told: set[str] = set()  # the steps whose crash this process has told of: a study's runs share one


def tell_crash(path: Path | None, why: str) -> None:
    """Say on stderr, once a process for each step, that it crashed and torch.compile's trains instead."""
    told = str(path) if path is not None else why
    if told not in _told:
        _told.add(told)
        print(f"note: train.compile: the step compiled ahead of time crashed when a test process loaded it ({why}); "
              "torch.compile's step trains instead (compiled again in every process)", file=sys.stderr, flush=True)
