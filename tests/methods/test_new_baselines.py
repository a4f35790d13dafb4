"""Defining properties of MOON, FPL, HarmoFL and pooled training."""

import math

import pytest
import torch

from fedbcs_lightning.config import merge
from fedbcs_lightning.federation.client import SegmentationClientModule
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.methods import Instruction
from fedbcs_lightning.methods.fpl import FPL, LastLayerDescriptors
from fedbcs_lightning.methods.harmofl import AmplitudeNormalization, WeightPerturbation
from fedbcs_lightning.methods.moon import ModelContrast, Moon, model_contrastive_loss
from fedbcs_lightning.models.unet import UNet
from tests.helpers import federation

# MOON -------------------------------------------------------------------------------


def test_moon_loss_falls_as_local_features_approach_the_global_ones():
    torch.manual_seed(0)
    z_global, z_previous = torch.randn(4, 8), torch.randn(4, 8)
    losses = [
        float(
            model_contrastive_loss(t * z_global + (1 - t) * z_previous, z_global, z_previous, 0.5)
        )
        for t in torch.linspace(0, 1, 6)
    ]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))


def test_moon_gradient_points_towards_the_global_representation():
    torch.manual_seed(0)
    z_global, z_previous = torch.randn(2, 8), torch.randn(2, 8)
    z = torch.randn(2, 8, requires_grad=True)
    model_contrastive_loss(z, z_global, z_previous, 0.5).backward()
    with torch.no_grad():
        stepped = z - 0.1 * z.grad
        before = torch.cosine_similarity(z, z_global).mean()
        after = torch.cosine_similarity(stepped, z_global).mean()
    assert after > before


def test_moon_hook_uses_global_and_previous_models():
    torch.manual_seed(0)
    net = Moon(projection_dim=8).configure_backbone(UNet(3, 2, width=4))
    module = SegmentationClientModule(net)
    hook = ModelContrast(mu=1.0, tau=0.5)
    images = torch.randn(2, 3, 32, 32)
    hook.on_fit_start(module, Instruction(net.state_dict()))
    term = hook.extra_losses(module, (images, None), net.forward_features(images))["moon"]
    # Round 1: no previous model, so global == previous and the term is log 2.
    assert math.isclose(float(term.detach()), math.log(2), rel_tol=1e-5)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    hook.on_fit_end(module)
    state = hook.state_dict()
    assert torch.equal(
        state["previous"]["moon_projection.mlp.0.weight"], net.moon_projection.mlp[0].weight
    )
    fresh = ModelContrast(1.0, 0.5)
    fresh.load_state_dict(state)
    assert fresh.previous is state["previous"]


def test_moon_trains_end_to_end(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "moon"}, "moon": {"projection_dim": 8}})
    strategy, clients = federation(cfg)
    result = FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    assert "moon_projection.mlp.0.weight" in result.last_weights
    losses = [result.history[r]["train"]["site1"]["loss/moon"] for r in (0, 1)]
    assert math.isclose(losses[0], math.log(2), rel_tol=1e-4) and losses[1] != losses[0]


# FPL --------------------------------------------------------------------------------


def test_fpl_descriptor_is_the_last_decoder_feature():
    torch.manual_seed(0)
    net = UNet(3, 3, width=4)
    output = net.forward_features(torch.randn(2, 3, 32, 32))
    labels = torch.randint(0, 3, (2, 32, 32))
    descriptor = LastLayerDescriptors()(output)["last"]
    last = output.decoder[-1]
    assert torch.allclose(descriptor.dense(), last)
    sums, counts = descriptor.class_sums(labels, 3)
    for cls in range(3):
        mask = (labels == cls)[:, None]
        assert torch.allclose(sums[cls], (last * mask).sum(dim=(0, 2, 3)), atol=1e-4)
        assert counts[cls] == mask.sum()


def test_fpl_prototypes_come_from_the_last_layer_only(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "fpl", "rounds": 2}})
    strategy, clients = federation(cfg)
    assert isinstance(strategy, FPL)
    net = clients[0].module.backbone
    assert not list(net.prototype_descriptors.parameters())  # no projection, no fusion
    assert not net.encoder_transforms  # no style recalibration
    result = FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    bank = strategy.global_prototypes
    assert bank.levels() == ["last"]
    for cls in bank.classes("last"):
        assert bank.centroids("last", cls).shape[1] == net.decoder_channels[-1]
    assert result.history[1]["train"]["site1"]["loss/align/last"] > 0
    assert "clusters/last/1" in result.history[0]["aggregate"]


# HarmoFL ----------------------------------------------------------------------------


def test_amplitude_normalisation_keeps_phase_and_imposes_the_running_amplitude():
    torch.manual_seed(0)
    norm = AmplitudeNormalization(channels=3, size=16, momentum=0.5)
    first, second = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    norm(first)
    expected = torch.fft.fft2(first).abs().mean(0)
    assert torch.allclose(norm.running_amplitude, expected, atol=1e-5)
    norm(second)
    expected = 0.5 * expected + 0.5 * torch.fft.fft2(second).abs().mean(0)
    assert torch.allclose(norm.running_amplitude, expected, atol=1e-4)
    norm.eval()
    x = torch.rand(2, 3, 16, 16)
    out_spectrum = torch.fft.fft2(norm(x))
    assert torch.allclose(
        out_spectrum.abs(), norm.running_amplitude.expand(2, -1, -1, -1), atol=1e-3
    )
    phase_in, phase_out = torch.fft.fft2(x).angle(), out_spectrum.angle()
    assert torch.allclose(torch.cos(phase_in - phase_out), torch.ones_like(phase_in), atol=1e-3)
    with pytest.raises(ValueError, match="data.image_size"):
        norm(torch.rand(1, 3, 32, 32))


def test_weight_perturbation_steps_with_the_gradient_at_the_perturbed_weights():
    target = torch.tensor([1.0, -2.0, 0.5])
    w = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0]))

    def loss_at(v):
        return ((v - target) ** 4).sum()

    def closure():
        optimizer.zero_grad()
        loss = loss_at(w)
        loss.backward()
        return loss

    optimizer = WeightPerturbation(torch.optim.SGD([w], lr=0.1), alpha=0.05)
    start = w.detach().clone()
    g = torch.autograd.functional.jacobian(loss_at, start)
    perturbed = start + 0.05 * g / g.norm()
    g_perturbed = torch.autograd.functional.jacobian(loss_at, perturbed)
    optimizer.step(closure)
    assert torch.allclose(w.detach(), start - 0.1 * g_perturbed, atol=1e-6)
    assert not torch.allclose(w.detach(), start - 0.1 * g, atol=1e-4)
    assert optimizer.state_dict() == optimizer.base.state_dict()


def test_harmofl_keeps_amplitude_local_and_trains(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "harmofl"}})
    strategy, clients = federation(cfg)
    result = FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    key = "input_transform.running_amplitude"
    selected = result.selected_weights  # what the clients hold after the final test
    assert strategy.is_local(key) and key not in selected  # never averaged
    a, b = (c.get_weights()[key] for c in clients)
    assert a.abs().sum() > 0 and not torch.allclose(a, b)
    assert torch.equal(selected[f"site2/{key}"], b)
    sent = strategy.configure_train(3, selected, ["site2"])["site2"].weights
    assert torch.equal(sent[key], b)  # each site gets its own back
    # Training losses are counted once per batch although each step evaluates it twice.
    assert clients[0].module.steps == len(clients[0].loaders["train"])


# pooled -----------------------------------------------------------------------------


def test_pooled_client_sees_every_sites_training_data(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "pooled"}})
    strategy, clients = federation(cfg)
    pooled = clients[-1]
    assert pooled.name == "pooled"
    sites = clients[:-1]
    assert pooled.num_train_examples == sum(c.num_train_examples for c in sites)
    union = pooled.loaders["train"].dataset
    assert [d.site.name for d in union.datasets] == [c.name for c in sites]
    result = FederatedTrainer(clients, strategy, 1).fit(clients[0].get_weights())
    assert list(result.history[0]["train"]) == ["pooled"]
    assert sorted(result.history[0]["val"]["sites"]) == sorted(c.name for c in sites)
    assert sorted(result.test_last) == sorted(c.name for c in sites)
