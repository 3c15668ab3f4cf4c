"""Batch transforms: exact behaviour on hand-made tensors, reproducibility, and the Pipeline's plan."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import AugmentConfig, MeanStd, ShiftConfig, TransformConfig
from cnnlab.transforms import (
    Pipeline,
    _cached_channels,
    make_permutation,
    mixup,
    normalize,
    permute_pixels,
    random_crop,
    random_grayscale,
    random_hflip,
    random_translate,
    shift,
    to_float,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=4, c=1, h=6, w=5, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=gen(seed), dtype=torch.uint8)


def lit(n, c, h, w, y, x, value=1.0):
    """A batch of black images with one lit pixel at (y, x) in every channel."""
    t = torch.zeros(n, c, h, w)
    t[..., y, x] = value
    return t


def lit_positions(t):
    """(row, col) of the single nonzero pixel of each image's first channel."""
    flat = t[:, 0].flatten(1)
    assert ((flat != 0).sum(1) == 1).all()
    idx = flat.abs().argmax(1)
    return torch.stack([idx // t.shape[-1], idx % t.shape[-1]], 1)


# ---------------------------------------------------------------------------- deterministic ops
def test_to_float_and_normalize_per_channel():
    x = to_float(torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3))
    assert x.dtype == torch.float32
    assert torch.allclose(x.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    x = torch.rand(5, 3, 4, 4, generator=gen())
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = normalize(x, mean, std)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - mean[c]) / std[c])
    assert torch.allclose(normalize(x, [0.5], [0.5]), x * 2 - 1)
    assert torch.allclose(normalize(x, torch.tensor(mean), torch.tensor(std)), out)


def test_permutation_is_a_seeded_bijection():
    perm = make_permutation(784, seed=3)
    assert perm.dtype == torch.long
    assert torch.equal(perm.sort().values, torch.arange(784))
    assert torch.equal(perm, make_permutation(784, seed=3))
    assert not torch.equal(perm, make_permutation(784, seed=4))
    # torch's own seeded draw, so that a seed names the same permutation in every cnnlab version (and
    # a resumed or repeated permuted run sees the pixels where its first epochs saw them)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(perm, torch.randperm(784, generator=g))


def test_permute_pixels_is_the_same_for_every_image_and_invertible():
    x = to_float(images(n=3, c=2, h=4, w=5))
    perm = make_permutation(20, seed=1)
    out = permute_pixels(x, perm)
    assert out.shape == x.shape
    flat = x.flatten(-2)
    assert torch.equal(out.flatten(-2), flat[..., perm])  # the same positions move in every image/channel
    for i in range(3):
        for c in range(2):
            assert torch.equal(out[i, c].flatten().sort().values, x[i, c].flatten().sort().values)
    assert torch.equal(permute_pixels(out, perm.argsort()), x)
    # a lit pixel lands at the same place in two different images
    a, b = lit(1, 1, 4, 5, 2, 3), lit(1, 1, 4, 5, 2, 3, value=7.0)
    assert torch.equal(lit_positions(permute_pixels(a, perm)), lit_positions(permute_pixels(b, perm)))


@pytest.mark.parametrize("dx,dy", [(2, 0), (-3, 0), (0, 1), (0, -2), (1, -1), (-2, 3)])
def test_roll_shift_equals_np_roll(dx, dy):
    x = images(n=2, c=3, h=6, w=7)
    expected = np.roll(np.roll(x.numpy(), dx, axis=-1), dy, axis=-2)
    assert np.array_equal(shift(x, dx, dy, "roll").numpy(), expected)


@pytest.mark.parametrize("dx,dy", [(2, 0), (-3, 0), (0, 1), (0, -2), (1, -1), (-2, 3)])
def test_zero_shift_moves_content_and_fills_uncovered(dx, dy):
    h, w = 6, 7
    out = shift(lit(1, 1, h, w, 2, 3), dx, dy, "zero")
    assert lit_positions(out).tolist() == [[2 + dy, 3 + dx]]
    full = shift(torch.ones(1, 2, h, w), dx, dy, "zero", fill=torch.tensor([-1.0, -2.0]))
    cols = slice(0, dx) if dx > 0 else slice(w + dx, w)
    rows = slice(0, dy) if dy > 0 else slice(h + dy, h)
    for c, f in enumerate([-1.0, -2.0]):
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[:, cols] = dx != 0
        mask[rows, :] |= dy != 0
        assert (full[0, c][mask] == f).all() and (full[0, c][~mask] == 1).all()


def test_shift_rejects_unknown_mode_and_keeps_input():
    x = images()
    before = x.clone()
    shift(x, 1, 1, "zero")
    shift(x, 1, 1, "roll")
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="mode"):
        shift(x, 1, 0, "wrap")


# ---------------------------------------------------------------------------- random ops
def test_hflip_flips_some_images_and_twice_gives_them_back():
    x = torch.rand(64, 3, 4, 5, generator=gen())
    out = random_hflip(x, gen(1))
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
    assert (flipped ^ kept).all() and 0 < flipped.sum() < 64
    assert torch.equal(random_hflip(x, gen(), p=1.0).flip(-1), x)
    assert torch.equal(random_hflip(x, gen(), p=0.0), x)


def pil_gray(raw):
    """What torchvision's RandomGrayscale does to a dataset's PIL image (study D's loop):
    convert("L"), 8 bits, on all 3 channels; as 0..1 floats like ToTensor."""
    from PIL import Image

    gray = [np.asarray(Image.fromarray(im.permute(1, 2, 0).numpy()).convert("L")) for im in raw]
    return torch.from_numpy(np.stack(gray)).unsqueeze(1).expand(-1, 3, -1, -1).float().div(255)


def test_grayscale_gives_equal_channels_with_the_luma_value():
    x = to_float(images(n=32, c=3, h=4, w=4))  # 0..1 on the 8-bit grid, as every dataset's images
    out = random_grayscale(x, 1.0, gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        assert torch.allclose(out[:, c], luma, atol=0.5 / 255 + 1e-6)  # rounded to 8 bits, as PIL does
    some = random_grayscale(x, 0.5, gen(2))
    gray = torch.tensor([torch.allclose(some[i, 0], some[i, 1]) for i in range(32)])
    assert 0 < gray.sum() < 32
    assert torch.equal(some[~gray], x[~gray])
    mono = torch.rand(2, 1, 3, 3)
    assert torch.equal(random_grayscale(mono, 1.0, gen()), mono)


@pytest.mark.parametrize("op", [random_crop, random_translate])
def test_crop_and_translate_move_a_lit_pixel_by_at_most_the_padding(op):
    pad = 2
    x = lit(200, 1, 8, 8, 4, 3)
    out = op(x, pad, gen(), fill=0.0)
    pos = lit_positions(out)  # the pixel never leaves an 8x8 image when it starts >= pad from the edge
    d = pos - torch.tensor([4, 3])
    assert d.abs().max() <= pad
    assert len({tuple(v) for v in d.tolist()}) == (2 * pad + 1) ** 2  # every offset occurs
    assert torch.equal(op(x, 0, gen()), x)


def test_translate_fills_uncovered_pixels_per_channel():
    x = torch.ones(100, 2, 5, 5)
    out = random_translate(x, 2, gen(), fill=torch.tensor([-3.0, 5.0]))
    assert set(out[:, 0].unique().tolist()) == {1.0, -3.0}
    assert set(out[:, 1].unique().tolist()) == {1.0, 5.0}
    assert (out == 1).all(1).any()  # some translations are (0, 0)


@pytest.mark.parametrize("mode,torch_mode", [("reflect", "reflect"), ("edge", "replicate")])
def test_reflect_and_edge_crops_equal_torch_padding_then_a_crop_at_the_same_offset(mode, torch_mode):
    x = torch.rand(300, 3, 7, 9, generator=gen())
    pad = 3
    out = random_crop(x, pad, gen(4), mode=mode)
    offsets = torch.randint(-pad, pad + 1, (2, 300), generator=gen(4))  # the draw random_crop made
    padded = F.pad(x, (pad,) * 4, mode=torch_mode)
    for i in range(300):
        dx, dy = offsets[:, i].tolist()  # a move by (dx, dy) is the crop at (pad - dy, pad - dx)
        crop = padded[i, :, pad - dy : pad - dy + 7, pad - dx : pad - dx + 9]
        assert torch.equal(out[i], crop), (i, dx, dy)
    assert len({tuple(v) for v in offsets.T.tolist()}) == (2 * pad + 1) ** 2  # every offset was checked


def test_random_ops_are_reproducible_from_the_generator_seed():
    x = torch.rand(16, 3, 8, 8, generator=gen())
    y = torch.arange(16) % 10
    for op in (
        lambda g: random_hflip(x, g),
        lambda g: random_grayscale(x, 0.5, g),
        lambda g: random_crop(x, 3, g),
        lambda g: random_translate(x, 3, g),
        lambda g: torch.cat([t.flatten() for t in mixup(x, y, 0.4, 10, g)]),
    ):
        assert torch.equal(op(gen(5)), op(gen(5)))
        assert not torch.equal(op(gen(5)), op(gen(6)))


def test_mixup_mixes_exactly_two_classes_per_row():
    y = torch.arange(10)
    x = y.float().view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()  # image i is the constant i
    mixed, soft = mixup(x, y, alpha=1.0, num_classes=10, generator=gen(1))
    assert soft.shape == (10, 10) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(1), torch.ones(10))
    counts = (soft > 0).sum(1)
    assert (counts <= 2).all() and (counts == 2).any()
    lam = soft[torch.arange(10), y]  # each row keeps its own class at weight lam (1 when paired with itself)
    two = counts == 2
    assert torch.allclose(lam[two], lam[two][0].expand(int(two.sum())))
    assert 0 < lam[two][0] < 1 and torch.allclose(lam[~two], torch.ones(int((~two).sum())))
    # each mixed image is the soft-label-weighted sum of its two source images
    assert torch.allclose(mixed.flatten(1), (soft @ torch.arange(10.0)).view(10, 1).expand(10, 4), atol=1e-5)


def test_mixup_draws_lambda_from_beta_alpha_alpha():
    def spread(alpha: float) -> float:
        """Mean |lam - 0.5| over 200 mixups; lam read off the soft targets of one-hot rows (the
        diagonal is lam where a row got another partner, 1 where it got itself)."""
        g, x, y = gen(0), torch.zeros(10, 1, 1, 1), torch.eye(10)
        lams = [float(mixup(x, y, alpha, 10, g)[1].diagonal().min()) for _ in range(200)]
        return float(np.mean(np.abs(np.array(lams) - 0.5)))

    assert spread(0.1) > 0.35  # U-shaped: lam near 0 or 1 (Beta(1, 1) would give 0.25)
    assert spread(10.0) < 0.15  # peaked at 0.5
    assert 0.2 < spread(1.0) < 0.3


# ---------------------------------------------------------------------------- pipeline
MNIST = dict(mean=[0.1307], std=[0.3081], image_shape=(1, 6, 6), seed=0, num_classes=10)
CIFAR = dict(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], image_shape=(3, 6, 6), seed=0, num_classes=10)


def pipe(stats=MNIST, **cfg):
    return Pipeline(TransformConfig(**cfg), **stats)


def test_prepare_normalizes_train_and_test_as_configured():
    raw = images(n=5, c=1, h=6, w=6)
    x = to_float(raw)
    norm = (x - 0.1307) / 0.3081
    p = pipe()
    assert torch.allclose(p.prepare(raw, train=True), norm)
    assert torch.allclose(p.prepare(raw, train=False), norm)
    bug = pipe(normalize_test=False)  # study D's bug: test images left at 0..1
    assert torch.allclose(bug.prepare(raw, train=True), norm)
    assert torch.equal(bug.prepare(raw, train=False), x)
    assert torch.equal(pipe(normalize="none").prepare(raw, train=True), x)
    custom = pipe(normalize=MeanStd(mean=[0.5], std=[0.5]))
    assert torch.allclose(custom.prepare(raw, train=True), x * 2 - 1)


def test_prepare_leaves_float_images_as_they_were():
    """The toy's images are float and cached (train and test are one tensor): prepare() normalizes in
    place, so it must do so on a copy, as the module promises (the input is never modified)."""
    x = torch.rand(3, 1, 6, 6, generator=gen())
    before = x.clone()
    out = pipe().prepare(x, train=True)
    assert torch.equal(x, before) and torch.allclose(out, (x - 0.1307) / 0.3081)


def test_prepare_shifts_with_black_before_normalizing_and_works_in_chunks(monkeypatch):
    monkeypatch.setattr("cnnlab.transforms.PREPARE_CHUNK", 2)
    raw = torch.full((5, 1, 6, 6), 255, dtype=torch.uint8)
    p = pipe(shift=ShiftConfig(dx=2, mode="zero"))
    out = p.prepare(raw, train=False)
    black, white = (0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081
    assert torch.allclose(out[..., :2], torch.tensor(black)) and torch.allclose(out[..., 2:], torch.tensor(white))
    rolled = pipe(normalize="none", shift=ShiftConfig(dx=-1, dy=2)).prepare(images(n=5, h=6, w=6), train=True)
    expected = np.roll(np.roll(images(n=5, h=6, w=6).numpy(), -1, axis=-1), 2, axis=-2) / 255.0
    assert np.allclose(rolled.numpy(), expected)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -2), (0, 3), (-1, 2)], ids=["x only", "y only up", "y only down", "both"])
def test_prepare_shifts_along_either_axis_alone(dx, dy):
    """A shift along y alone (dx=0) moves the images too: the cases above all shift along x."""
    raw = images(n=3, h=6, w=6)
    rolled = pipe(normalize="none", shift=ShiftConfig(dx=dx, dy=dy)).prepare(raw, train=True)
    assert np.array_equal(rolled.numpy(), np.roll(raw.numpy(), (dy, dx), axis=(-2, -1)) / np.float32(255))
    zero = pipe(normalize="none", shift=ShiftConfig(dx=dx, dy=dy, mode="zero")).prepare(raw, train=False)
    assert torch.equal(zero, shift(to_float(raw), dx, dy, "zero")) and not torch.equal(zero, to_float(raw))


def test_prepare_permutes_both_splits_with_the_permute_seed():
    raw = images(n=3, c=1, h=6, w=6)
    p = pipe(normalize="none", permute=True, permute_seed=7)
    assert not p.augments and not p.defer_permutation
    perm = make_permutation(36, 7)
    expected = permute_pixels(to_float(raw), perm)
    assert torch.equal(p.prepare(raw, train=True), expected)
    assert torch.equal(p.prepare(raw, train=False), expected)
    default_seed = Pipeline(TransformConfig(normalize="none", permute=True), **{**MNIST, "seed": 11})
    assert torch.equal(default_seed.perm, make_permutation(36, 11))


def test_pipelines_alike_share_their_device_constants_with_normalize():
    cpu = torch.device("cpu")
    p = pipe(CIFAR, permute=True)
    on = p._on(cpu)
    assert pipe(CIFAR, permute=True)._on(cpu) is on  # made once for every pipeline that asks alike
    assert on["mean"] is _cached_channels(tuple(CIFAR["mean"]), cpu, torch.float32)  # normalize()'s own tensors
    assert torch.equal(on["perm"], p.perm) and pipe(CIFAR)._on(cpu) is not on
    black = p.prepare(torch.zeros(1, 3, 6, 6, dtype=torch.uint8), train=True)
    assert torch.equal(black[0, :, 0, 0], on["fill"])  # the fill is black as prepare() normalizes it


def test_train_batch_is_a_no_op_without_augmentation():
    p = pipe(permute=True)
    x, y = p.prepare(images(c=1, h=6, w=6), train=True), torch.arange(4)
    assert not p.augments
    out_x, out_y = p.train_batch(x, y, gen())
    assert out_x is x and out_y is y


def test_augmentation_only_touches_training_batches():
    raw = images(n=8, c=3, h=6, w=6)
    p = pipe(CIFAR, augment=AugmentConfig(hflip=True, crop_padding=2))
    assert p.augments
    test = p.prepare(raw, train=False)
    assert torch.equal(test, p.prepare(raw, train=False))  # prepare() is never random
    assert torch.allclose(test, normalize(to_float(raw), CIFAR["mean"], CIFAR["std"]))
    train = p.prepare(raw, train=True)
    before = train.clone()
    out, y = p.train_batch(train, torch.arange(8), gen())
    assert torch.equal(train, before) and not torch.equal(out, train)
    # the crop fills with normalized black, per channel
    fill = torch.tensor([(0 - m) / s for m, s in zip(CIFAR["mean"], CIFAR["std"])])
    black = p.train_batch(p.prepare(torch.zeros(8, 3, 6, 6, dtype=torch.uint8), True), y, gen())[0]
    assert torch.allclose(black, fill.view(1, 3, 1, 1).expand_as(black))


def test_grayscale_is_pils_convert_L_bit_for_bit():
    # study D's RandomGrayscale runs on PIL images: convert("L") rounds the luma to 8 bits; a
    # float luma misses it by up to 0.5/255 (0.25/255 on average, for 99.9% of all colours)
    raw = torch.randint(0, 256, (64, 3, 16, 16), generator=gen(5), dtype=torch.uint8)
    out = random_grayscale(to_float(raw), 1.0, gen())
    assert torch.equal(out, pil_gray(raw))


def test_grayscale_in_the_pipeline_works_on_unnormalized_rgb():
    raw = images(n=4, c=3, h=6, w=6)
    p = pipe(CIFAR, augment=AugmentConfig(grayscale=1.0))
    out, _ = p.train_batch(p.prepare(raw, train=True), torch.arange(4), gen())
    # RandomGrayscale -> ToTensor -> Normalize, as study D's train transform
    assert torch.allclose(out, normalize(pil_gray(raw), CIFAR["mean"], CIFAR["std"]), atol=1e-5)


def test_permutation_is_deferred_after_geometric_augmentation():
    raw = images(n=6, c=1, h=6, w=6)
    p = pipe(normalize="none", permute=True, augment=AugmentConfig(translate=2))
    assert p.defer_permutation
    train = p.prepare(raw, train=True)
    assert torch.equal(train, to_float(raw))  # not permuted yet
    assert torch.equal(p.prepare(raw, train=False), permute_pixels(to_float(raw), p.perm))
    out, _ = p.train_batch(train, torch.arange(6), gen(3))
    expected = permute_pixels(random_translate(train, 2, gen(3)), p.perm)
    assert torch.equal(out, expected)
    # grayscale and mixup commute with the permutation: nothing to defer
    assert not pipe(CIFAR, permute=True, augment=AugmentConfig(grayscale=0.5, mixup=0.2)).defer_permutation


def test_pipeline_mixup_gives_soft_targets():
    p = pipe(augment=AugmentConfig(mixup=0.4))
    assert p.augments
    x = p.prepare(images(n=8, c=1, h=6, w=6), train=True)
    out, soft = p.train_batch(x, torch.arange(8) % 10, gen())
    assert out.shape == x.shape and soft.shape == (8, 10)
    assert torch.allclose(soft.sum(1), torch.ones(8))
