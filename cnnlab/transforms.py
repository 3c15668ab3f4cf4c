"""Batch-level image transforms on the device: no PIL, no DataLoader.

Every function takes a whole batch (N, C, H, W) on any device and returns a new tensor (the input
is never modified). Random ops take an explicit ``torch.Generator`` living on the same device as the
data, so a run is reproducible and resumable from the generator's state; none of them loops over
images in Python, and none but mixup syncs with the host: its one lambda per batch is drawn by
NumPy from a seed the device's generator gives (`.item()`, which on CUDA waits for the steps
queued before it; not yet measured on a GPU).

``Pipeline`` applies a ``TransformConfig``: ``prepare()`` runs the deterministic part once over a
whole split, ``train_batch()`` the random augmentation of each training batch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from cnnlab.config import MeanStd, TransformConfig

if TYPE_CHECKING:
    from cnnlab.data import Split

Fill = Union[float, Sequence[float], Tensor]

# ITU-R 601-2 luma as PIL's convert("L") computes it, which is what torchvision's RandomGrayscale
# does to the PIL images of the tutorials' datasets: on 8-bit values, in 16-bit fixed point, rounded
# to an 8-bit value, L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (0.299, 0.587, 0.114 scaled by 2**16).
LUMA_FIXED = (19595, 38470, 7471)
PREPARE_CHUNK = 10_000  # images per step of Pipeline.prepare(): bounds the float32 temporaries


# ---------------------------------------------------------------------------- helpers
@lru_cache(maxsize=64)
def _cached_channels(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


@lru_cache(maxsize=16)
def _device_constants(stats: tuple | None, perm_args: tuple[int, int] | None, device: torch.device) -> dict[str, Tensor | float]:
    """A pipeline's mean, std, fill (normalized black) and permutation on a device, made once.
    Shared by the pipelines that ask alike: read them, never modify them."""
    on: dict[str, Tensor | float] = {"fill": 0.0}
    if stats is not None:
        mean, std = (_cached_channels(values, device, torch.float32) for values in stats)
        on.update(mean=mean, std=std, fill=(-mean / std).view(-1))
    if perm_args is not None:
        on["perm"] = make_permutation(*perm_args).to(device)
    return on


def _channels(values: Fill, like: Tensor) -> Tensor | float:
    """Per-channel values as a (1, C, 1, 1) tensor on like's device (cached), or a plain float."""
    if isinstance(values, (int, float)):
        return float(values)
    if isinstance(values, Tensor):
        return values.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    return _cached_channels(tuple(float(v) for v in values), like.device, like.dtype)


def _translate(x: Tensor, dx: Tensor, dy: Tensor, fill: Fill, mode: str = "constant") -> Tensor:
    """Move image n by (dx[n], dy[n]) pixels (right, down). Uncovered pixels get `fill` (mode
    "constant"), the image mirrored at its edge (mode "reflect", the edge pixel not repeated) or the
    nearest edge pixel (mode "edge").

    dx and dy are integer tensors of shape (N,) or (1,) on x's device, |d| < the image's size. One
    gather over the flattened H*W positions, then a mask for the pixels that came from outside the image.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h) - dy.view(-1, 1)  # (B, H) source rows
    cols = torch.arange(w, device=x.device).view(1, w) - dx.view(-1, 1)  # (B, W) source columns
    if mode == "reflect":  # -1 -> 1, h -> h - 2
        rows, cols = (h - 1) - ((h - 1) - rows.abs()).abs(), (w - 1) - ((w - 1) - cols.abs()).abs()
    inside = ((rows >= 0) & (rows < h)).view(-1, 1, h, 1) & ((cols >= 0) & (cols < w)).view(-1, 1, 1, w)
    index = rows.clamp(0, h - 1).view(-1, h, 1) * w + cols.clamp(0, w - 1).view(-1, 1, w)
    index = index.view(-1, 1, h * w).expand(n, c, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    # the clamped index already repeats the edge pixels: only mode "constant" masks them
    return torch.where(inside, moved, _channels(fill, x)) if mode == "constant" else moved


def _rand(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device)


# ---------------------------------------------------------------------------- deterministic ops
def to_float(images_uint8: Tensor) -> Tensor:
    """uint8 0..255 -> a new float32 tensor in 0..1. A floating input is taken as already scaled (copied)."""
    if images_uint8.dtype == torch.uint8:
        return images_uint8.to(torch.float32).div_(255.0)
    return images_uint8.to(torch.float32, copy=True)


def normalize(x: Tensor, mean: Fill, std: Fill) -> Tensor:
    """(x - mean) / std per channel; mean and std hold 1 or C values (or are scalars)."""
    return (x - _channels(mean, x)) / _channels(std, x)


def make_permutation(num_pixels: int, seed: int) -> Tensor:
    """torch.randperm(num_pixels) from a CPU generator seeded by `seed`: the same for a seed."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_pixels, generator=generator)


def permute_pixels(x: Tensor, perm: Tensor) -> Tensor:
    """Output pixel k takes input pixel perm[k] of the flattened H*W, in every image and channel."""
    flat = x.flatten(-2)
    index = perm.to(x.device, non_blocking=True).view(*([1] * (flat.dim() - 1)), -1).expand_as(flat)
    return flat.gather(-1, index).view(x.shape)  # gather: several times faster than index_select here


def shift(x: Tensor, dx: int, dy: int, mode: str = "roll", fill: Fill = 0.0) -> Tensor:
    """Move every image dx pixels right and dy down (negative: left, up).

    "roll" wraps around like np.roll(img, dx, axis=-1) and np.roll(img, dy, axis=-2);
    "zero" fills the uncovered columns and rows with `fill` (a float or one value per channel).
    """
    if mode == "roll":
        return torch.roll(x, shifts=(int(dy), int(dx)), dims=(-2, -1)) if dx or dy else x.clone()
    if mode == "zero":
        offset = torch.tensor([[dx], [dy]], dtype=torch.long, device=x.device)
        return _translate(x, offset[0], offset[1], fill)
    raise ValueError(f"unknown shift mode {mode!r}; valid: roll, zero")


# ---------------------------------------------------------------------------- random ops
def random_hflip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image left-right with probability p."""
    flip = _rand(x.shape[0], generator, x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_grayscale(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """With probability p per image, replace 0..1 RGB by its luma on all 3 channels.

    Luma = 0.299 R + 0.587 G + 0.114 B (ITU-R 601-2), computed exactly as PIL's convert("L") does
    it (torchvision's RandomGrayscale on the datasets' PIL images): on the 8-bit values x * 255,
    rounded to an 8-bit value, so the result is PIL's bit for bit (a float luma differs from it
    by up to 0.5/255). One-channel batches come back unchanged.
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"grayscale needs 1 or 3 channels, got {x.shape[1]}")
    v = x.mul(255).round_().to(torch.int32)  # the 8-bit values (x is 0..1 on the 1/255 grid)
    r, g, b = LUMA_FIXED
    luma = (v[:, 0:1] * r + v[:, 1:2] * g + v[:, 2:3] * b + 32768).bitwise_right_shift_(16)
    gray = luma.to(x.dtype).div_(255).expand_as(x)
    pick = _rand(x.shape[0], generator, x.device) < p
    return torch.where(pick.view(-1, 1, 1, 1), gray, x)


def random_translate(x: Tensor, max_px: int, generator: torch.Generator, fill: Fill = 0.0, mode: str = "constant") -> Tensor:
    """Move each image by its own random dx, dy in [-max_px, max_px]; uncovered pixels get `fill`
    (or, with mode "reflect", the image mirrored at its edge; with "edge", the nearest edge pixel)."""
    if max_px <= 0:
        return x
    offsets = torch.randint(-max_px, max_px + 1, (2, x.shape[0]), generator=generator, device=x.device)
    return _translate(x, offsets[0], offsets[1], fill, mode)


def random_crop(x: Tensor, padding: int, generator: torch.Generator, fill: Fill = 0.0, mode: str = "constant") -> Tensor:
    """Pad by `padding` with `fill` (mode "constant"), the mirrored image (mode "reflect") or the
    edge pixels repeated (mode "edge"), as torchvision's RandomCrop padding_mode does, and crop back
    to H x W at a random offset per image.

    Cropping at offset o in [0, 2*padding] of the padded image is a translation by padding - o,
    so this is random_translate with max_px = padding (no padded copy is materialised).
    """
    return random_translate(x, padding, generator, fill, mode)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, reproducible from the generator (a numpy RNG seeded from it)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item()
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: Tensor, y: Tensor, alpha: float, num_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mix each image with a shuffled partner: lam * x + (1 - lam) * x[partner], lam ~ Beta(alpha, alpha).

    y holds class indices (N,) or soft targets (N, num_classes); the result's targets are soft,
    (N, num_classes) float32 rows summing to 1.
    """
    lam = _beta(alpha, generator)
    partner = torch.randperm(x.shape[0], generator=generator, device=x.device)
    mixed = x.mul(lam).add_(x[partner], alpha=1.0 - lam)
    if y.dim() == 1:
        soft = torch.zeros(y.shape[0], num_classes, dtype=torch.float32, device=x.device)
        soft.scatter_(1, y.view(-1, 1), lam)
        soft.scatter_add_(1, y[partner].view(-1, 1), torch.full_like(soft[:, :1], 1.0 - lam))
    else:
        soft = y.to(torch.float32).mul(lam).add_(y[partner].to(torch.float32), alpha=1.0 - lam)
    return mixed, soft


# ---------------------------------------------------------------------------- the pipeline
class Pipeline:
    """Applies a TransformConfig: prepare() once per split, train_batch() per training batch."""

    def __init__(
        self,
        cfg: TransformConfig,
        mean: Sequence[float],
        std: Sequence[float],
        image_shape: tuple[int, int, int],
        seed: int,
        num_classes: int,
    ):
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        c, h, w = self.image_shape
        if cfg.normalize == "none":
            self.stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        else:
            m, s = (cfg.normalize.mean, cfg.normalize.std) if isinstance(cfg.normalize, MeanStd) else (mean, std)
            if len(m) not in (1, c) or len(s) != len(m):
                raise ValueError(f"normalization needs 1 or {c} mean/std values, got {len(m)} and {len(s)}")
            self.stats = (tuple(float(v) for v in m), tuple(float(v) for v in s))
        self._perm_args = (h * w, cfg.permutation_seed(seed)) if cfg.permute else None
        self.perm = make_permutation(*self._perm_args) if cfg.permute else None
        aug = cfg.augment
        geometric = aug.hflip or aug.crop_padding > 0 or aug.translate > 0
        # grayscale and mixup act per pixel, so they commute with the permutation; moving pixels does not
        self.defer_permutation = self.perm is not None and geometric

    @classmethod
    def for_split(cls, cfg: TransformConfig, split: Split, seed: int) -> Pipeline:
        """The pipeline for a dataset's images: its published mean/std, image shape and classes."""
        return cls(cfg, split.mean, split.std, tuple(split.images.shape[1:]), seed, len(split.classes))

    @property
    def augments(self) -> bool:
        """Whether train_batch() does anything (a random op, or the deferred permutation)."""
        aug = self.cfg.augment
        return bool(aug.hflip or aug.grayscale > 0 or aug.crop_padding > 0 or aug.translate > 0 or aug.mixup > 0)

    def _on(self, device: torch.device) -> dict[str, Tensor | float]:
        """mean, std, fill (normalized black) and the permutation on a device, made once."""
        return _device_constants(self.stats, self._perm_args, device)

    def prepare(self, images_uint8: Tensor, train: bool) -> Tensor:
        """The deterministic part, once over a whole split, in chunks: float 0..1, the fixed shift
        (black fill), normalization (the test split only if normalize_test) and the permutation
        (not on the training split when it is deferred to train_batch()). float32, same device."""
        cfg = self.cfg
        on = self._on(images_uint8.device)
        do_shift = cfg.shift.dx != 0 or cfg.shift.dy != 0
        do_norm = self.stats is not None and (train or cfg.normalize_test)
        do_perm = self.perm is not None and not (train and self.defer_permutation)
        out = torch.empty(images_uint8.shape, dtype=torch.float32, device=images_uint8.device)
        for start in range(0, images_uint8.shape[0], PREPARE_CHUNK):
            x = to_float(images_uint8[start : start + PREPARE_CHUNK])
            if do_shift:
                x = shift(x, cfg.shift.dx, cfg.shift.dy, cfg.shift.mode, fill=0.0)
            if do_norm:
                x = x.sub_(on["mean"]).div_(on["std"])
            if do_perm:
                x = permute_pixels(x, on["perm"])
            out[start : start + x.shape[0]] = x
        return out

    def as_trained(self, x: Tensor) -> Tensor:
        """Prepared training images as the model sees them without augmentation: with the
        permutation when train_batch() applies it (deferred behind the geometric augmentation)."""
        return permute_pixels(x, self._on(x.device)["perm"]) if self.defer_permutation else x

    def train_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random augmentation of a prepared training batch: crop, translate, hflip, grayscale,
        the deferred permutation, mixup. (x, y) come back as they are when nothing is configured."""
        if not self.augments:
            return x, y
        aug = self.cfg.augment
        on = self._on(x.device)
        if aug.crop_padding > 0:
            x = random_crop(x, aug.crop_padding, generator, fill=on["fill"], mode=aug.crop_padding_mode)
        if aug.translate > 0:
            x = random_translate(x, aug.translate, generator, fill=on["fill"])
        if aug.hflip:
            x = random_hflip(x, generator)
        if aug.grayscale > 0 and x.shape[1] == 3:
            if self.stats is None:
                x = random_grayscale(x, aug.grayscale, generator)
            else:  # grayscale is defined on 0..1 RGB, and CIFAR's channels have different stats
                x = random_grayscale(x * on["std"] + on["mean"], aug.grayscale, generator)
                x = x.sub_(on["mean"]).div_(on["std"])
        x = self.as_trained(x)
        if aug.mixup > 0:
            x, y = mixup(x, y, aug.mixup, self.num_classes, generator)
        return x, y
