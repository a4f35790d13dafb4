"""The built-in backbones pass the contract of :mod:`fedbcs_lightning.testing` (the one a
plugin's tests subclass), plus checks of the reference U-Net's own options."""

import pytest
import torch
from torch import nn

from fedbcs_lightning.config import ConfigError, resolve
from fedbcs_lightning.federation.build import check_setup
from fedbcs_lightning.models import SegmentationBackbone
from fedbcs_lightning.models.unet import UNet
from fedbcs_lightning.testing import BackboneContract


class TestUNet(BackboneContract):
    backbone = "unet"
    model = {"width": 4}


class TestSmpUNet(BackboneContract):
    backbone = "smp-unet"
    model = {"encoder": "resnet18"}


def test_reference_unet_widths_and_stateless_norm():
    net = UNet(1, 2, width=32, norm="batch_stateless")
    assert net.encoder_channels == (32, 64, 128, 256) and net.bottleneck_channels == 512
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.affine and not m.track_running_stats for m in bns)
    net.eval()
    x = torch.randn(4, 1, 32, 32)
    # Batch statistics even in eval: an image's output depends on its batch-mates.
    assert not torch.allclose(net(x)[:1], net(x[:1]))


def test_eval_uses_running_stats_with_default_norm():
    net = UNet(1, 2, width=4).eval()
    x = torch.randn(4, 1, 32, 32)
    assert torch.allclose(net(x)[:1], net(x[:1]), atol=1e-5)


def test_a_subclass_cannot_replace_the_checked_forward():
    with pytest.raises(TypeError, match="implements forward_levels"):

        class Bypass(SegmentationBackbone):
            def forward_features(self, x):
                return x


@pytest.mark.parametrize(
    ("backbone", "size", "message"),
    [("unet", 40, "multiple of 16, got 40; try 48"), ("smp-unet", 48, "multiple of 32, got 48")],
)
def test_the_image_size_is_checked_against_the_backbones_divisor(backbone, size, message):
    config = resolve(options={"model": {"backbone": backbone}, "data": {"image_size": size}})
    with pytest.raises(
        ConfigError, match=f"data.image_size: backbone {backbone!r} needs a {message}"
    ):
        check_setup(config)
