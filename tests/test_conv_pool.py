"""cnnlab/conv_pool.py: Conv2d then MaxPool2d(2) as one convolution over 2x2 pixel blocks.

It must be the same function of the same parameters as the two layers (outputs and every gradient,
to float rounding), send a window's gradient where max_pool2d sends it (the first maximum, row by
row), and be put in place only where it computes what the model's layers do.
"""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.conv_pool import ConvMaxPool2d, block_kernels, blocks_of, window_max, with_conv_max_pools
from cnnlab.models import build_model


def images(shape, memory_format, bands: bool) -> torch.Tensor:
    """Random images; with bands, a blank band and a saturated one, where windows tie as on MNIST."""
    x = torch.randn(shape)
    if bands:
        x[:, :, : shape[2] // 4] = 0.0
        x[:, :, -(shape[2] // 4) :] = 2.8
    return x.contiguous(memory_format=memory_format)


@pytest.mark.parametrize("bands", [False, True], ids=["random", "bands"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "c_in,c_out,size,padding",
    [(1, 6, 28, 0), (6, 6, 12, 0), (1, 6, 28, 2), (6, 16, 14, 0), (3, 4, 11, 0)],
    ids=["cnn-conv1", "cnn-conv2", "lenet-conv1-padded", "lenet-conv2", "odd-output-falls-back"],
)
def test_it_computes_what_conv2d_then_max_pool2d_compute(c_in, c_out, size, padding, memory_format, bands):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, 5, padding=padding).to(memory_format=memory_format)
    x = images((8, c_in, size, size), memory_format, bands).requires_grad_()
    expected = F.max_pool2d(conv(x), 2)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, conv.weight, conv.bias], grad)

    fused = ConvMaxPool2d(conv)
    out = fused(x)
    grads = torch.autograd.grad(out, [x, conv.weight, conv.bias], grad)

    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5)
    # In a band a window's four outputs are equal but for rounding, which differs between the two
    # ways of computing them, so the input's gradient may go to another of its pixels there (both
    # are the gradient of the same function). The parameters' gradients are the same either way:
    # those pixels see the same (blank or saturated) patch.
    for name, a, b in list(zip(["input", "weight", "bias"], expected_grads, grads))[bands:]:
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5), name
    assert fused.weight is conv.weight and fused.bias is conv.bias


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_each_channel_group_is_the_convolution_at_one_pixel_of_the_windows(memory_format):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 3, 12, 12).contiguous(memory_format=memory_format), torch.randn(4, 3, 5, 5)
    blocks = blocks_of(x)
    assert blocks.shape == (2, 12, 6, 6) and blocks.is_contiguous(memory_format=memory_format)
    assert torch.equal(blocks[:, 3:6], x[:, :, 0::2, 1::2])  # block pixel r = 1 (top right), channels 0..2
    groups = F.conv2d(blocks, block_kernels(weight)).chunk(4, dim=1)
    full = F.conv2d(x, weight)
    for q, group in enumerate(groups):  # q = 2 * dy + dx: a b / c d, as max_pool2d reads a window
        dy, dx = divmod(q, 2)
        assert torch.allclose(group, full[:, :, dy::2, dx::2], atol=1e-5), q


def test_a_windows_gradient_goes_to_its_first_maximum_row_by_row():
    # one window per case, its four pixels as the four channel groups: a b / c d
    windows = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 1.0], [0.0, 1.0, 3.0, 3.0], [0.0, 1.0, 2.0, 5.0]])
    blocks = windows.view(4, 4, 1, 1).requires_grad_()
    top = window_max(blocks)
    (grad,) = torch.autograd.grad(top, blocks, torch.full_like(top, 7.0))

    assert top.flatten().tolist() == [1.0, 2.0, 3.0, 5.0]
    assert grad.view(4, 4).tolist() == [[7, 0, 0, 0], [0, 7, 0, 0], [0, 0, 7, 0], [0, 0, 0, 7]]
    # as max_pool2d picks
    pooled = windows.view(4, 1, 2, 2).requires_grad_()
    (pool_grad,) = torch.autograd.grad(F.max_pool2d(pooled, 2), pooled, torch.full((4, 1, 1, 1), 7.0))
    assert torch.equal(pool_grad.view(4, 4), grad.view(4, 4))


def test_a_window_holding_a_nan_is_nan_with_its_gradient_where_max_pool2d_sends_it():
    # max_pool2d propagates a NaN wherever it is in the window (a diverging run's loss must say so),
    # its gradient to the last NaN
    nan = float("nan")
    windows = torch.tensor([[nan, 1.0, 2.0, 0.0], [1.0, nan, 2.0, 0.0], [1.0, 2.0, nan, 0.0], [1.0, 2.0, 0.0, nan], [0.0, nan, 3.0, nan]])
    blocks = windows.view(5, 4, 1, 1).requires_grad_()
    top = window_max(blocks)
    (grad,) = torch.autograd.grad(top, blocks, torch.full_like(top, 7.0))

    pooled = windows.view(5, 1, 2, 2).requires_grad_()
    expected = F.max_pool2d(pooled, 2)
    (pool_grad,) = torch.autograd.grad(expected, pooled, torch.full_like(expected, 7.0))
    assert top.isnan().all() and expected.isnan().all()
    assert torch.equal(pool_grad.view(5, 4), grad.view(5, 4))


def model(name: str, **opts):
    return build_model(SimpleNamespace(name=name, **opts), (1, 28, 28), 10)


@pytest.mark.parametrize("relu_first", [False, True], ids=["pool-relu", "relu-pool"])
def test_the_cnns_conv_pool_pairs_become_one_layer_with_the_same_parameters(relu_first):
    cnn = model("cnn", n_feature=6, relu_first=relu_first)
    layers = [type(m) for m in cnn.features]
    fused, pairs = with_conv_max_pools(cnn)

    assert [type(m) for m in cnn.features] == layers  # the model itself is unchanged
    assert [type(m).__name__ for m in fused.features] == ["ConvMaxPool2d", "Identity", "ReLU"] * 2
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in cnn.named_parameters()]
    assert all(a is b for a, b in zip(fused.parameters(), cnn.parameters()))
    assert len(pairs) == len(list(cnn.modules()))
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(fused(x), cnn(x), atol=1e-5)


def test_only_what_it_computes_the_same_is_fused():
    fc = model("fc", hidden=[8, 8])
    assert with_conv_max_pools(fc) == (fc, [])  # nothing to fuse: the model itself
    # sigmoid does not commute with the pooling here (saturated values tie), average pooling is not a max
    for activation, pooling in (("sigmoid", "max"), ("relu", "avg")):
        lenet = model("lenet", activation=activation, pooling=pooling, init="default")
        assert with_conv_max_pools(lenet)[0] is lenet
    lenet = model("lenet", activation="relu", pooling="max", init="default")
    fused, _ = with_conv_max_pools(lenet)
    assert sum(type(m).__name__ == "ConvMaxPool2d" for m in fused.modules()) == 2
    assert fused.features[0].padding == 2
    strided = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.MaxPool2d(2))
    assert with_conv_max_pools(strided)[0] is strided
    # an in-place ReLU moved after the pooling would overwrite what its backward needs; a hook would be lost
    assert with_conv_max_pools(in_place := nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2)))[0] is in_place
    hooked = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2))
    hooked[0].register_forward_hook(lambda *args: None)
    assert with_conv_max_pools(hooked)[0] is hooked

    class Identity(nn.Sequential):  # a Sequential with a forward of its own
        def forward(self, x):
            return x
    assert with_conv_max_pools(odd := Identity(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2)))[0] is odd
    assert isinstance(with_conv_max_pools(nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2)))[0][0], ConvMaxPool2d)
    # wide convolutions fill the vector lanes already: keras_cnn's 32 channels stay as they are
    keras = build_model(SimpleNamespace(name="keras_cnn", dropout=True, init="default"), (3, 32, 32), 10)
    assert with_conv_max_pools(keras)[0] is keras
