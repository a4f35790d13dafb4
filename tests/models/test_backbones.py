"""One shared test class runs every registered backbone."""

import pytest
import torch
from torch import nn

from fedbcs_lightning.catalog import BACKBONES
from fedbcs_lightning.config import ModelConfig
from fedbcs_lightning.models import SegmentationBackbone, create_backbone
from fedbcs_lightning.models.unet import UNet

SMALL = {"unet": {"width": 4}, "smp-unet": {"encoder": "resnet18"}}


def build(name, in_channels=3, num_classes=3):
    return create_backbone(name, in_channels, num_classes, **SMALL.get(name, {}))


@pytest.mark.parametrize("name", BACKBONES.names())
class TestBackboneContract:
    def test_shapes_and_channel_attributes(self, name):
        torch.manual_seed(0)
        net = build(name)
        x = torch.randn(2, 3, 64, 64)
        out = net.forward_features(x)
        assert out.logits.shape == (2, 3, 64, 64)
        assert [f.shape[1] for f in out.encoder] == list(net.encoder_channels)
        assert [f.shape[1] for f in out.decoder] == list(net.decoder_channels)
        assert [64 // f.shape[-1] for f in out.encoder] == list(net.encoder_strides)
        assert [64 // f.shape[-1] for f in out.decoder] == list(net.decoder_strides)
        assert out.bottleneck.shape[1] == net.bottleneck_channels

    def test_backward_reaches_every_parameter(self, name):
        net = build(name)
        net.forward_features(torch.randn(2, 3, 64, 64)).logits.sum().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None]
        assert not missing

    def test_state_round_trip(self, name):
        torch.manual_seed(0)
        a, b = build(name), build(name)
        b.load_state_dict(a.state_dict())
        a.eval(), b.eval()
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(a(x), b(x))

    def test_encoder_transform_replaces_level_feature(self, name):
        net = build(name)

        class Zero(nn.Module):
            def forward(self, x):
                return torch.zeros_like(x)

        net.set_encoder_transform(1, Zero())
        out = net.forward_features(torch.randn(1, 3, 64, 64))
        assert out.encoder[1].abs().sum() == 0
        assert "encoder_transforms.1" not in dict(net.named_parameters())  # Zero has none
        with pytest.raises(ValueError, match="does not exist"):
            net.set_encoder_transform(len(net.encoder_channels), Zero())

    def test_input_transform_sees_the_input_first(self, name):
        net = build(name).eval()
        seen = []

        class Record(nn.Module):
            def forward(self, x):
                seen.append(x)
                return torch.zeros_like(x)

        x = torch.randn(1, 3, 64, 64)
        before = net(x)
        net.set_input_transform(Record())
        after = net(x)
        assert len(seen) == 1 and torch.equal(seen[0], x)
        assert torch.allclose(after, net(torch.zeros_like(x)))
        assert not torch.allclose(after, before)

    def test_bad_input_size_says_how_to_fix(self, name):
        net = build(name)
        with pytest.raises(ValueError, match="not a multiple of"):
            net(torch.randn(1, 3, 50, 64))
        with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3"):
            net(torch.randn(1, 1, 64, 64))

    def test_from_config(self, name):
        net = BACKBONES.get(name).from_config(ModelConfig(backbone=name, width=4), 3, 2)
        assert isinstance(net, SegmentationBackbone) and net.num_classes == 2


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
