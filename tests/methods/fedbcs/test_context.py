import pytest
import torch
import torch.nn.functional as F

from fedbcs_lightning.methods.fedbcs.context import ContextFusion, DualLevelDescriptors
from fedbcs_lightning.methods.prototypes import resize_labels
from fedbcs_lightning.models.unet import UNet


def _naive(fusion, levels, context, size):
    """concat(level, up(context)) -> 1x1 conv -> nearest resize, as the reference does."""
    out = []
    for local, ctx, f in zip(fusion.local, fusion.context, levels, strict=True):
        weight = torch.cat([local.weight, ctx.weight], dim=1)
        stacked = torch.cat([f, F.interpolate(context, size=f.shape[-2:], mode="nearest")], 1)
        fused = F.conv2d(stacked, weight, local.bias)
        out.append(F.interpolate(fused, size=size, mode="nearest"))
    return torch.cat(out, 1)


def test_low_resolution_context_equals_naive_concat_conv_resize():
    torch.manual_seed(0)
    fusion = ContextFusion([3, 5, 7], context_channels=11, dim=6)
    levels = [torch.randn(2, 3, 32, 24), torch.randn(2, 5, 16, 12), torch.randn(2, 7, 8, 6)]
    context = torch.randn(2, 11, 4, 3)
    for size in [(32, 24), (8, 6)]:  # encoder-like (finest) and decoder-like targets
        naive = _naive(fusion, levels, context, size)
        fast = fusion.describe(levels, context, size).dense()
        assert torch.allclose(fast, naive, atol=1e-5)
        maps = torch.cat([F.interpolate(m, size=size) for m in fusion(levels, context)], 1)
        assert torch.allclose(maps, naive, atol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (4, 4)])
def test_gather_and_class_sums_match_the_dense_map(size):
    torch.manual_seed(1)
    fusion = ContextFusion([3, 5, 7], context_channels=6, dim=4)
    levels = [torch.randn(2, 3, 16, 16), torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4)]
    d = fusion.describe(levels, torch.randn(2, 6, 2, 2), size)
    dense = d.dense()
    assert dense.shape == (2, 12, *size)
    labels = torch.randint(0, 3, (2, *size))
    b, y, x = torch.nonzero(labels != 0, as_tuple=True)
    assert torch.allclose(d.at(b, y, x), dense[b, :, y, x], atol=1e-5)
    sums, counts = d.class_sums(labels, 3)
    for c in range(3):
        sel = labels == c
        brute = dense.permute(0, 2, 3, 1)[sel]
        assert counts[c] == sel.sum()
        assert torch.allclose(sums[c] / counts[c], brute.mean(0), atol=1e-5)


def test_dual_level_descriptor_resolutions_follow_the_spec():
    net = UNet(3, 2, width=4)
    heads = DualLevelDescriptors(net, dim=8)
    out = net.forward_features(torch.randn(2, 3, 32, 32))
    descriptors = heads(out)
    assert descriptors["encoder"].size == (32, 32)  # e1: H
    assert descriptors["decoder"].size == (8, 8)  # d3: H/4
    assert descriptors["encoder"].dim == descriptors["decoder"].dim == 24  # 3 x D
    only = DualLevelDescriptors(net, dim=8, sides=["decoder"])
    assert list(only(out)) == ["decoder"]


def test_resize_labels_is_nearest():
    labels = torch.tensor([[[0, 1], [2, 3]]])
    up = resize_labels(labels, (4, 4))
    assert up.dtype == torch.long and set(up.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(resize_labels(up, (2, 2)), labels)


def test_the_two_halves_start_as_one_conv_over_the_concatenation_would():
    """Uniform in +-1/sqrt(fan_in) with the concatenation's fan-in, weights and bias."""
    from fedbcs_lightning.methods.fedbcs.context import ContextFusion

    torch.manual_seed(0)
    fusion = ContextFusion([16, 32], context_channels=64, dim=256).requires_grad_(False)
    for local, ctx, channels in zip(fusion.local, fusion.context, (16, 32), strict=True):
        reference = torch.nn.Conv2d(channels + 64, 256, 1).requires_grad_(False)
        bound = 1 / (channels + 64) ** 0.5
        assert abs(float(reference.weight.abs().max()) - bound) < 0.01 * bound  # PyTorch's rule
        for tensor in (local.weight, ctx.weight, local.bias):
            assert float(tensor.abs().max()) <= bound
            assert abs(float(tensor.std()) - bound / 3**0.5) < 0.1 * bound
