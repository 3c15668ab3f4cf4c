"""The CPU training step compiled whole (train.compile on the CPU): forward, loss, backward and the
optimizer's update as one torch.compile graph.

Why: the study models are so small that on a CPU a step costs what PyTorch takes to dispatch its
few dozen tiny ops (study A's FC2Layer: about 0.23 ms a step, of which the arithmetic is a few
microseconds). Compiled as one graph they run as a handful of generated C++ loops and library
calls: the FC epoch goes from 0.22 s to 0.12 s, the CNN's from 1.6 s to 1.2 s (its max-pooling of 6
channels, slow in PyTorch's kernel, becomes a generated loop). Compiling the model alone (what
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
  the graph would break it before the optimizer.

Only full batches of the run's batch size go through the graph; an epoch's short last batch is an
ordinary step, which changes the same parameters and state.
"""

from __future__ import annotations

import inspect
import logging
import time

import torch
from torch.func import functional_call, grad_and_value

from cnnlab.engine import autocast, batch_too_small
from cnnlab.errors import ConfigError, first_line


class CompiledStep:
    """Calls run one full batch's training step, update included, and return (outputs, loss)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn, amp: str, batch_size: int):
        self.model, self.optimizer, self.loss_fn, self.amp, self.batch_size = model, optimizer, loss_fn, amp, batch_size
        self.compile_seconds = 0.0  # time in the calls that compiled (their step included)
        self.graphs = 0  # graphs compiled: one, or two in a new run whose optimizer keeps state
        self._state_layouts: set[tuple[int, ...]] = set()
        self._settled = False
        self._twin: torch.optim.Optimizer | None = None
        # inductor's "No CUDA runtime is found" (CUDA_HOME is no concern of a CPU build)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # dynamo keeps at most 8 versions of one function's code (cache_size_limit), and every run in
        # a process (a study's, a bench's repeats) compiles this same code: start each run afresh
        torch.compiler.reset()
        self._compiled = torch.compile(self._step, fullgraph=True, dynamic=False)

    def takes(self, xb: torch.Tensor) -> bool:
        return len(xb) == self.batch_size

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._twin is None:  # now, not at setup: after a resume has loaded the optimizer's state
            self._twin, self._views, frozen = twin_optimizer(self.optimizer, self.model)
            self._constants = {**frozen, **dict(self.model.named_buffers())}  # not differentiated
            # the schedule's check that optimizer.step() ran before it: it did, compiled
            self.optimizer._opt_called = True
        for group, twin in zip(self.optimizer.param_groups, self._twin.param_groups):
            twin["lr"].fill_(group["lr"])
        # what the graph's guards depend on besides the shapes: which optimizer state exists yet (it
        # is all there after the first step, so this is looked at until a step leaves it as it was)
        layout = None if self._settled else self._state_layout()
        new = layout is not None and layout not in self._state_layouts
        t0 = time.perf_counter()
        try:
            out, loss = self._compiled(self._views, self._constants, xb, yb)
        except Exception as e:
            if not new:  # compiled already: an error of the step itself
                raise
            # the compiler's own errors (no C++ compiler, an op it cannot trace) or the model's
            error = batch_too_small(e, len(xb)) or ConfigError(
                f"train.compile: this training step could not be compiled ({first_line(e)}); set train.compile=false"
            )
            raise error from None
        if new:
            self._state_layouts.add(layout)
            self.graphs += 1
            self.compile_seconds += time.perf_counter() - t0
        if layout is not None:
            self._settled = self._state_layout() == layout
        return out, loss

    def _state_layout(self) -> tuple[int, ...]:
        return tuple(len(self.optimizer.state.get(p, ())) for p in self.model.parameters())

    def _loss(self, params: dict, constants: dict, xb: torch.Tensor, yb: torch.Tensor):
        with autocast(xb.device, self.amp, cache=False):
            out = functional_call(self.model, {**params, **constants}, (xb,))
        return self.loss_fn(out.float(), yb), out

    def _step(self, params: dict, constants: dict, xb: torch.Tensor, yb: torch.Tensor):
        grads, (loss, out) = grad_and_value(self._loss, has_aux=True)(params, constants, xb, yb)
        with torch.no_grad():
            for name, view in params.items():
                view.grad.copy_(grads[name])
            inspect.unwrap(type(self._twin).step)(self._twin)
        return out.detach(), loss.detach()


def twin_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, dict, dict]:
    """An optimizer of the same kind and settings over detached views of model's parameters, sharing
    each parameter's state dict with optimizer; its learning rates are 0-dim tensors, and it runs
    PyTorch's per-tensor loop, which compiles (the fused kernels do not). Also the views by name: of
    the trainable parameters (each with a zeroed .grad), and of the frozen ones (requires_grad off,
    as fastnet's BatchNorm scales: no .grad, so that the optimizer leaves them as they are)."""
    view_of = {p: p.detach() for p in model.parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        settings.update(lr=torch.tensor(float(group["lr"])), fused=None, foreach=False)
        groups.append({**settings, "params": [view_of[p] for p in group["params"]]})
    twin = type(optimizer)(groups)
    for p, view in view_of.items():
        if p.requires_grad:
            view.grad = torch.zeros_like(view)
        twin.state[view] = optimizer.state[p]  # the same dict: the twin's updates are the optimizer's
    named = dict(model.named_parameters())
    trainable = {name: view_of[p] for name, p in named.items() if p.requires_grad}
    frozen = {name: view_of[p] for name, p in named.items() if not p.requires_grad}
    return twin, trainable, frozen

