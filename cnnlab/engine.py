"""The training loop: fit() and evaluate(), readable top to bottom.

The splits are already prepared float tensors on the device (see transforms.Pipeline); a batch is
an index slice of a seeded permutation, augmented as a whole on the device. Nothing here prints:
progress goes through the `on_step` / `on_epoch` callbacks.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError, ConfigError, first_line

if TYPE_CHECKING:
    from cnnlab.aot_step import AotStep  # which, like compiled_step, imports this module
    from cnnlab.compiled_step import CompiledStep

CHECK_EVERY = 50  # steps between checks that the loss is finite (each one waits for the device)
GRAD_COPY_MIN = 16384  # values in a batch's features from which gradients_channels_last copies their gradient


class NonFiniteLoss(CnnlabError):
    """The loss became NaN or infinite: training stops instead of going on with garbage."""


@dataclass
class Data:
    """Prepared splits on the device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class State:
    """Everything that changes while training, and so everything a checkpoint holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    order_gen: torch.Generator  # CPU generator for the data order
    aug_gen: torch.Generator  # device generator for augmentation
    epoch: int = 0  # completed epochs
    step_graph: StepGraph | None = None  # on CUDA: the training step as a CUDA graph (not checkpointed)
    # on the CPU with train.compile: the whole step compiled (ahead of time and cached, else by torch.compile)
    compiled_step: AotStep | CompiledStep | None = None


def loss_function(name: str, label_smoothing: float) -> Callable:
    if name == "bce":  # the toy model ends in a sigmoid and has one output
        return lambda out, y: F.binary_cross_entropy(out.squeeze(1), y.float(), reduction="mean")
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)


def correct_count(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.shape[1] == 1:  # a single sigmoid output
        return ((out.squeeze(1) > 0.5).long() == y.round().long()).sum()
    labels = y.argmax(1) if y.dim() == 2 else y  # soft targets (mixup): the dominant class
    return (out.argmax(1) == labels).sum()


def class_probabilities(out: torch.Tensor) -> torch.Tensor:
    """(N, classes) probabilities from a model's outputs: softmax of logits, or [1 - p, p] for a
    single sigmoid output (the toy model's output is already a probability)."""
    out = out.float()
    if out.shape[1] == 1:
        return torch.cat([1 - out, out], dim=1)
    return torch.softmax(out, dim=1)


def autocast(device: torch.device, amp: str, cache: bool = True):
    """bf16 autocast on CUDA, and on CPUs (fast where they have bf16 instructions, e.g. AVX512-BF16, AMX).
    cache=False: no cache of cast weights (a CUDA graph cannot capture one)."""
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def predict(model, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The model's outputs for x, averaged over test-time augmentations (airbench's levels). flip:
    the images and their mirror images; flip_translate: that, half-and-half with the same for the
    images moved one pixel up-left and one down-right (edges reflected)."""
    if tta == "none":
        return model(x)

    def mirrored(v):
        return 0.5 * (model(v).float() + model(v.flip(3)).float())

    out = mirrored(x)
    if tta == "flip_translate":
        h, w = x.shape[2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        out = 0.5 * out + 0.25 * (mirrored(padded[:, :, :h, :w]) + mirrored(padded[:, :, 2:, 2:]))
    return out


@torch.inference_mode()
def evaluate(model, x, y, batch_size: int, loss_fn, amp: str = "none", tta: str = "none", eval_mode: bool = True) -> tuple[float, float]:
    """Mean loss and accuracy over a whole split, in large batches, one host sync; in eval mode, or
    (eval_mode=False, train.eval_mode) in training mode, as a loop that never calls model.eval()."""
    was_training = model.training
    model.train(not eval_mode)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        with autocast(x.device, amp), one_line_if_batch_too_small(len(xb), "test"):
            out = predict(model, xb, tta)
        loss_sum += loss_fn(out.float(), yb) * len(xb)
        correct += correct_count(out, yb)
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


# what most often makes a loss NaN, and what else does (weight_decay=1e30 was told to lower the rate)
DIVERGED_HINT = "most often optimizer.lr is too high; a large weight_decay or badly scaled inputs do it too"


def check_finite(losses: list[torch.Tensor], start: int, epoch: int) -> None:
    """Raise NonFiniteLoss naming the first NaN/inf among losses[start:] (one host sync)."""
    finite = torch.isfinite(torch.stack(losses[start:]))
    if not bool(finite.all()):
        bad = start + int((~finite).nonzero()[0])
        raise NonFiniteLoss(
            f"the loss became {losses[bad].item()} at epoch {epoch + 1}, step {bad + 1}; "
            f"training stopped ({DIVERGED_HINT})"
        )


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] along the first dim, by index_select (about twice as fast as x[idx] on the CPU),
    keeping a channels-last batch channels-last (index_select alone would return NCHW)."""
    if is_channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)
    return x.index_select(0, idx)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether x is a batch of images laid out channels-last (and not also contiguous: one channel)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def gradients_channels_last(model: torch.nn.Module) -> None:
    """Make the gradient that reaches each nn.Flatten's channels-last input channels-last too.

    Why: Flatten's backward returns the gradient as a view of the flat one, laid out NCHW, while the
    layers before it hold channels-last tensors; with layouts that differ, their backward kernels take
    a slow strided path (LeNet's second average-pooling: about 200 us a step where the same layouts
    take 25; its epoch 6% faster). One small copy puts it right, where the batch's features are
    many enough (GRAD_COPY_MIN) that it saves more than the hook's Python costs (study A's CNN, 6,144
    values: 1% slower with it). The values are unchanged, and so are the results, bit for bit (each
    of those kernels computes an element the same way in any layout). Eager steps only: the hook
    would be a Python call inside a compiled or traced step."""
    def to_channels_last(grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)

    def pre_hook(module, args):
        x = args[0]
        if x.requires_grad and x.numel() >= GRAD_COPY_MIN and is_channels_last(x):
            x.register_hook(to_channels_last)

    for m in model.modules():
        if isinstance(m, torch.nn.Flatten):
            m.register_forward_pre_hook(pre_hook)


def steps_per_epoch(n_train: int, batch_size: int, max_steps: int | None) -> int:
    steps = math.ceil(n_train / batch_size)
    return min(steps, max_steps) if max_steps else steps


def batch_too_small(e: Exception, images: int, split: str = "train") -> ConfigError | None:
    """The one-line error for BatchNorm over one value per channel (one image, 1x1 maps), if e is that:
    a ValueError, which torch.compile wraps in an error of its own. split: the batch's, train or test
    (evaluated in training mode, train.eval_mode: false)."""
    if "more than 1 value per channel" not in str(e):
        return None
    batch, subset = ("train.batch_size", "dataset.train_subset") if split == "train" else ("train.eval_batch_size", "dataset.test_subset")
    mode = "" if split == "train" else " in training mode (train.eval_mode: false)"
    return ConfigError(
        f"a {'training' if split == 'train' else 'test'} batch of {images} image(s) is too small for this model's BatchNorm{mode}; "
        f"choose {batch} or {subset} so that no batch holds a single image"
    )


@contextlib.contextmanager
def one_line_if_batch_too_small(images: int, split: str = "train"):
    """Turns the model's error for a batch too small for its BatchNorm into batch_too_small's."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        error = batch_too_small(e, images, split)
        if error is None:
            raise
        raise error from None


def forward_backward(model, xb: torch.Tensor, yb: torch.Tensor, loss_fn, amp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's outputs and loss, with the loss's gradients added to the parameters' .grad."""
    # each weight is cast once per step anyway, so autocast's cache would save nothing
    with autocast(xb.device, amp, cache=False), one_line_if_batch_too_small(len(xb)):
        out = model(xb)
    loss = loss_fn(out.float(), yb)
    loss.backward()
    return out, loss


@functools.cache
def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream every StepGraph on device warms up and captures on. One for the process, not
    one per run: cuBLAS keeps a workspace for each stream it has run on until the process ends, so
    a stream per run would hold tens of MiB more GPU memory for each run of a study or bench."""
    return torch.cuda.Stream(device)


class StepGraph:
    """The training step's zero_grad, forward, loss and backward as one CUDA graph, captured after
    WARMUP ordinary steps, on a full batch, and replayed for every later batch of that shape.

    Why: the study models are so small that on a GPU a step costs what the host takes to launch its
    kernels (the CNN: about 2 ms of launches for 0.2 ms of GPU work), and a replay launches them all
    at once. The optimizer step and the schedule stay outside the graph (one fused kernel or two, for
    the optimizers PyTorch fuses), so every optimizer, schedule and checkpoint works as without it. The gradients
    are zeroed in place, never freed, so that they stay where the graph writes them.
    """

    WARMUP = 3  # ordinary steps before the capture, on the capture's stream (PyTorch's recipe)

    def __init__(self, model, loss_fn, amp: str, batch_size: int, device: torch.device):
        self.model, self.loss_fn, self.amp, self.batch_size, self.device = model, loss_fn, amp, batch_size, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps = 0
        self.replays = 0
        self.stream = capture_stream(device)

    def __call__(self, optimizer, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the gradients and run the batch forward and backward; returns (outputs, loss)."""
        # torch.cuda's streams and captures follow the current device, which stays cuda:0 unless set
        with torch.cuda.device(self.device):
            return self._step(optimizer, xb, yb)

    def _step(self, optimizer, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is None and self.steps >= self.WARMUP and len(xb) == self.batch_size:
            self._capture(optimizer, xb, yb)
        self.steps += 1
        if self.graph is not None and xb.shape == self.x.shape and yb.shape == self.y.shape:
            self.x.copy_(xb)
            self.y.copy_(yb)
            self.graph.replay()
            self.replays += 1
            return self.out.clone(), self.loss.clone()
        # an ordinary step: a warm-up one, or a batch of another shape (an epoch's short last batch)
        here = torch.cuda.current_stream()
        stream = self.stream if self.graph is None else here
        stream.wait_stream(here)
        with torch.cuda.stream(stream):
            optimizer.zero_grad(set_to_none=False)
            out, loss = forward_backward(self.model, xb, yb, self.loss_fn, self.amp)
        here.wait_stream(stream)
        return out, loss

    def _capture(self, optimizer, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self.x, self.y = xb.clone(), yb.clone()
        graph = torch.cuda.CUDAGraph()
        here = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                optimizer.zero_grad(set_to_none=False)
                out, loss = forward_backward(self.model, self.x, self.y, self.loss_fn, self.amp)
        except RuntimeError as e:  # an op CUDA cannot capture (a host sync, say) in a model's step
            torch.cuda.set_stream(here)  # an aborted capture leaves its own stream the current one
            raise ConfigError(
                f"this model's training step cannot be captured as a CUDA graph ({first_line(e)}); set train.cuda_graphs=false"
            ) from None
        self.out, self.loss = out.detach(), loss.detach()
        self.graph = graph


def train_epoch(state: State, data: Data, pipeline, train_cfg, loss_fn, on_step=None) -> dict:
    """One pass over the (shuffled) training split. Returns the epoch's train loss/acc and time."""
    model, opt, sched = state.model, state.optimizer, state.scheduler
    x, y = data.x_train, data.y_train
    device = x.device
    bs = train_cfg.batch_size
    steps = steps_per_epoch(len(x), bs, train_cfg.max_steps)
    # the order comes from a CPU generator so it is identical on every device, and resumable
    order = torch.randperm(len(x), generator=state.order_gen).to(device, non_blocking=True)
    # The step's bookkeeping launches no kernels and never waits for the device: losses, outputs and
    # targets are only kept (detached); the losses are checked every CHECK_EVERY steps and the
    # accuracy is counted once at the end. For these small models a handful of tiny ops per step
    # would cost as much as a layer.
    losses: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    checked = 0
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = order[step * bs : (step + 1) * bs]
        xb, yb = pipeline.train_batch(take(x, idx), y.index_select(0, idx), state.aug_gen)
        if state.compiled_step is not None and state.compiled_step.takes(xb):
            out, loss = state.compiled_step(xb, yb)  # the optimizer's update included
        else:
            if state.step_graph is not None:
                out, loss = state.step_graph(opt, xb, yb)
            else:
                opt.zero_grad(set_to_none=True)
                out, loss = forward_backward(model, xb, yb, loss_fn, train_cfg.amp)
            opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.detach())
        outputs.append(out.detach())
        targets.append(yb)
        if (step + 1) % CHECK_EVERY == 0 or step == steps - 1:
            check_finite(losses, checked, state.epoch)
            checked = step + 1
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
    correct = correct_count(torch.cat(outputs), torch.cat(targets)) if steps else torch.zeros(())
    sizes = [len(t) for t in targets]
    seen = sum(sizes)
    # per image, like the accuracy: a short last batch weighs what its images weigh
    weights = torch.tensor(sizes, dtype=torch.float32, device=device)
    train_loss = (torch.stack(losses).float() * weights).sum().item() / seen if steps else float("nan")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return {
        "train_loss": train_loss,
        "train_acc": correct.item() / max(seen, 1),
        "epoch_seconds": seconds,
        "samples_per_sec": seen / seconds if seconds > 0 else float("nan"),
    }


def fit(state: State, data: Data, pipeline, train_cfg, loss_fn, on_epoch=None, on_step=None, on_epoch_start=None) -> None:
    """Train from state.epoch to train_cfg.epochs, evaluating after every epoch.

    on_epoch(row, state) runs after each complete epoch (metrics, checkpoint); it is where a run
    becomes durable, so an interruption in the middle of an epoch loses only that epoch.
    """
    for epoch in range(state.epoch + 1, train_cfg.epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch, steps_per_epoch(len(data.x_train), train_cfg.batch_size, train_cfg.max_steps))
        row = {"epoch": epoch, "lr": state.optimizer.param_groups[0]["lr"]}
        row.update(train_epoch(state, data, pipeline, train_cfg, loss_fn, on_step))
        t0 = time.perf_counter()
        row["test_loss"], row["test_acc"] = evaluate(
            state.model, data.x_test, data.y_test, train_cfg.eval_batch_size, loss_fn, train_cfg.amp, train_cfg.tta, train_cfg.eval_mode
        )
        row["eval_seconds"] = time.perf_counter() - t0
        if not math.isfinite(row["test_loss"]):  # the epoch's last steps, which no training loss checks, broke the weights
            raise NonFiniteLoss(f"the test loss became {row['test_loss']} after epoch {epoch}; training stopped ({DIVERGED_HINT})")
        state.epoch = epoch
        if on_epoch is not None:
            on_epoch(row, state)
