"""The CPU training step compiled whole (train.compile on the CPU): forward, loss, backward and the
optimizer's update as one torch.compile graph.

Why: the study models are so small that on a CPU a step costs what PyTorch takes to dispatch its
few dozen tiny ops (study A's FC2Layer: about 0.23 ms a step, of which the arithmetic is a few
microseconds). Compiled as one graph they run as a handful of generated C++ loops and library
calls (docs/performance.md's "Compiling the training step" has the measurements: FC's epoch 0.24 -> 0.14 s). Compiling the model alone (what
train.compile does on CUDA) gained nothing here: the optimizer, the loss and the autograd engine's
work stay outside, and each compiled region costs its own call.

How, so that it stays one graph (a break costs what it saves):
- the gradients come from torch.func (grad_and_value over functional_call) on detached views of the
  parameters, so the graph is an inference graph that updates the parameters in place;
- the update is the config's own torch.optim optimizer, run by a twin of it over those views that
  shares its state (momentum buffers, Adam's moments), so checkpoints, resumes and schedules see
  the real optimizer as after an ordinary step. The twin's step is called unwrapped: the public
  step() breaks the graph on purpose (torch/optim/optimizer.py, _use_grad). Its learning rates are
  tensors, refreshed from the real optimizer before each step, so a schedule never recompiles;
- the gradients are copied into fixed .grad tensors of the views, because assigning .grad inside
  the graph would break it before the optimizer;
- only the parameters the loss reaches are differentiated: torch.func would give the others zeros,
  which the optimizer would decay and keep state for, where an ordinary step gives them no .grad and
  the optimizer skips them. Which they are is found once, by an eager pass before the first call.

What the graph computes is the model's function, but a convolution followed by 2x2 max-pooling (study
A's CNN, LeNet with ReLU and max-pooling) is computed as one convolution over 2x2 pixel blocks
(conv_pool.py), on a copy of the model that shares its parameters and buffers.

Only full batches of the run's batch size go through the graph; an epoch's short last batch is an
ordinary step, which changes the same parameters and state.

Once warm, a call skips dynamo's guards (about 500 checks of the optimizer's state, the modules and
the tensors: a tenth of FC2Layer's step). This is safe here, where torch's "skip_guard_eval_unsafe"
would not be in general, because this class owns everything those guards look at: the views, the
twin and its state are made once; learning rates change inside their tensors; and what a caller
could change (the batch's shape, strides and types, the modules' train/eval mode, grad mode) is
compared with the warm call's before each call, in far fewer checks. "Warm" means a guarded call
that compiled nothing (SGD's third: its second compiles the graph with momentum), and only for
the latest CompiledStep of the process, since a newer one empties dynamo's cache (reset below).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import time

import torch
from torch._dynamo.exc import TorchDynamoException
from torch.func import functional_call, grad_and_value

from cnnlab.conv_pool import with_conv_max_pools
from cnnlab.engine import autocast, batch_too_small, one_line_if_batch_too_small
from cnnlab.errors import ConfigError, first_line


_instances = itertools.count()
_latest = -1  # the CompiledStep that last emptied dynamo's cache


class CompiledStep:
    """Calls run one full batch's training step, update included, and return (outputs, loss)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, amp: str, batch_size: int):
        self.model, self.optimizer, self.loss_fn, self.amp, self.batch_size = model, optimizer, loss_fn, amp, batch_size
        self.compile_seconds = 0.0  # time in the calls that compiled (their step included)
        self.graphs = 0  # graphs compiled, as dynamo counts them
        self.loaded = 0  # steps taken from cnnlab's cache: none (aot_step.py's are; inductor's caches are its own)
        self.crashed = None  # why a step compiled ahead of time was not used: never one here (aot_step.py)
        self._twin: torch.optim.Optimizer | None = None
        self._lrs: list[float] = []  # the rates in the twin's tensors
        # inductor's "No CUDA runtime is found" (CUDA_HOME is no concern of a CPU build)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # dynamo keeps at most 8 versions of one function's code (cache_size_limit), and every run in
        # a process (a study's, a bench's repeats) compiles this same code: start each run afresh
        torch.compiler.reset()
        global _latest
        self._instance = _latest = next(_instances)
        self._compiled = torch.compile(self._step, fullgraph=True, dynamic=False)
        self._modules = list(model.modules())
        # what the graph computes: model, or a copy with its Conv2d + MaxPool2d(2) pairs as one
        # convolution each (conv_pool.py), whose modes follow model's (the pairs)
        self._compute, self._mode_pairs = with_conv_max_pools(model)
        self._warm = None  # the inputs' signature (below) of the last guarded call that compiled nothing
        self._skip_guards = skip_guards()

    def _signature(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple:
        """What a caller could change between calls that the graph depends on."""
        return (
            xb.shape, xb.stride(), xb.dtype, yb.shape, yb.stride(), yb.dtype,
            torch.is_grad_enabled(), tuple(m.training for m in self._modules),
        )

    def takes(self, xb: torch.Tensor) -> bool:
        """Whether xb is a batch of the size the graph is for (an epoch's short last one is not)."""
        return len(xb) == self.batch_size

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._twin is None:  # now, not at setup: after a resume has loaded the optimizer's state
            with one_line_if_batch_too_small(len(xb)):  # its forward is the model's, eager
                reached = reached_parameters(self.model, self.loss_fn, xb, yb)
            self._twin, self._views, fixed = twin_optimizer(self.optimizer, self.model, reached)
            self._constants = {**fixed, **dict(self.model.named_buffers())}  # not differentiated
            # the schedule's check that optimizer.step() ran before it: it did, compiled
            self.optimizer._opt_called = True
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if lrs != self._lrs:  # a schedule's new rates (a fill costs as much as the check)
            for lr, twin in zip(lrs, self._twin.param_groups):
                twin["lr"].fill_(lr)
            self._lrs = lrs
        graphs = compiled_graphs()
        signature = self._signature(xb, yb)
        warm = signature == self._warm and self._instance == _latest
        if not warm:
            for module, computing in self._mode_pairs:
                computing.training = module.training
        t0 = time.perf_counter()
        try:
            with self._skip_guards if warm else contextlib.nullcontext():
                out, loss = self._compiled(self._views, self._constants, xb, yb)
        except TorchDynamoException as e:  # the compiler's (no working C++ compiler, an op it cannot
            # trace), or the model's own while it was traced
            raise compile_error(e, len(xb)) from None
        new = compiled_graphs() - graphs
        self._warm = None if new else signature
        if new:  # one when a run starts; one more for SGD's momentum, which its first step creates
            self.graphs += new
            self.compile_seconds += time.perf_counter() - t0
        return out, loss

    def _loss(self, params: dict, constants: dict, xb: torch.Tensor, yb: torch.Tensor):
        with autocast(xb.device, self.amp, cache=False):
            out = functional_call(self._compute, {**params, **constants}, (xb,))
        return self.loss_fn(out.float(), yb), out

    def _step(self, params: dict, constants: dict, xb: torch.Tensor, yb: torch.Tensor):
        grads, (loss, out) = grad_and_value(self._loss, has_aux=True)(params, constants, xb, yb)
        with torch.no_grad():
            for name, view in params.items():
                view.grad.copy_(grads[name])
            inspect.unwrap(type(self._twin).step)(self._twin)
        return out.detach(), loss.detach()


def skip_guards() -> contextlib.AbstractContextManager:
    """A context manager that makes dynamo skip all guards but those telling its cached graphs apart,
    reusable (a new one per call costs 10 us, as much as the guards it skips for FC2Layer)."""
    stance = torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
    stance.__exit__(None, None, None)  # set_stance() sets it at once: back to the stance before
    return stance


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (its own count; torch.compile has no public one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def compile_error(e: Exception, images: int) -> ConfigError:
    """The one-line error for a step that could not be compiled (of either kind: this module's or
    aot_step.py's): the batch too small for the model, or the compiler's reason."""
    return batch_too_small(e, images) or ConfigError(
        f"train.compile: this training step could not be compiled ({compile_failure(e)}); set train.compile=false"
    )


def compile_failure(e: Exception) -> str:
    """Why compiling failed, in one line: the compiler's first line and, for a C++ compile, the C++
    compiler's first error (missing omp.h or Python.h), which inductor puts lines below it."""
    cause = next((line.strip() for line in str(e).splitlines()[1:] if "error:" in line), None)
    return f"{first_line(e)}: {cause}" if cause else first_line(e)


def reached_parameters(model: torch.nn.Module, loss_fn, xb: torch.Tensor, yb: torch.Tensor) -> set[torch.Tensor]:
    """The trainable parameters that the loss of a batch depends on: those that an ordinary step gives
    a .grad, and so the optimizer updates. One eager forward and backward that changes nothing: the
    buffers it moves (BatchNorm's statistics) are copies, and the random numbers it draws (dropout's)
    are drawn again later."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        loss = loss_fn(functional_call(model, buffers, (xb,)).float(), yb)
        if not loss.requires_grad:
            return set()
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    return {p for p, g in zip(trainable, grads) if g is not None}


def twin_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, reached: set[torch.Tensor]
) -> tuple[torch.optim.Optimizer, dict, dict]:
    """An optimizer of the same kind and settings over detached views of model's parameters, sharing
    each parameter's state dict with optimizer; its learning rates are 0-dim tensors, and it runs
    PyTorch's per-tensor loop, which compiles (the fused kernels do not). Also the views by name: of
    the parameters the loss reaches (each with a zeroed .grad), and of the others: frozen ones
    (requires_grad off, as fastnet's BatchNorm scales) and those the loss does not depend on, which an
    ordinary step gives no .grad, so that the optimizer leaves them as they are (no weight decay, no
    state)."""
    view_of = {p: p.detach() for p in model.parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        settings.update(lr=torch.tensor(float(group["lr"])), fused=None, foreach=False)
        groups.append({**settings, "params": [view_of[p] for p in group["params"]]})
    twin = type(optimizer)(groups)
    for p in [p for p in model.parameters() if p in reached]:  # in the model's order, not the set's (ids):
        # the twin's state in the same order in every process, so the compiled graph is too (and its
        # cache entry, else missed in each new process)
        view_of[p].grad = torch.zeros_like(p)
        twin.state[view_of[p]] = optimizer.state[p]  # the same dict: the twin's updates are the optimizer's
    named = dict(model.named_parameters())
    differentiated = {name: view_of[p] for name, p in named.items() if p in reached}
    fixed = {name: view_of[p] for name, p in named.items() if p not in reached}
    return twin, differentiated, fixed
