"""MOON: model-contrastive federated learning (Li et al., CVPR 2021).

Each client pulls the representation of its current model towards the global model's and
pushes it away from its own model of the previous round. For segmentation the
representation is a projection of the globally pooled bottleneck feature. The frozen
global and previous models each cost one extra forward pass per step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedbcs_lightning.methods.base import ClientHook, Instruction
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.methods.options import MoonOptions

PROJECTION = "moon_projection"


class PooledProjection(nn.Module):
    """Global average pooling of the bottleneck, then a two-layer MLP (MOON's head)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, dim))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.mlp(bottleneck.mean(dim=(2, 3)))


def model_contrastive_loss(
    z: torch.Tensor, z_global: torch.Tensor, z_previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """``-log(e^{cos(z, z_g)/tau} / (e^{cos(z, z_g)/tau} + e^{cos(z, z_p)/tau}))``, batch mean.

    >>> z = torch.tensor([[1.0, 0.0]])
    >>> near = model_contrastive_loss(z, z, torch.tensor([[0.0, 1.0]]), tau=0.5)
    >>> far = model_contrastive_loss(z, torch.tensor([[0.0, 1.0]]), z, tau=0.5)
    >>> bool(near < far)
    True
    """
    positive = F.cosine_similarity(z, z_global, dim=1) / tau
    negative = F.cosine_similarity(z, z_previous, dim=1) / tau
    return (torch.logsumexp(torch.stack([positive, negative], dim=1), dim=1) - positive).mean()


def _frozen_copy(backbone: nn.Module, weights: dict[str, torch.Tensor] | None = None):
    model = copy.deepcopy(backbone)
    if weights is not None:
        model.load_state_dict(weights)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


class ModelContrast(ClientHook):
    """Client side of MOON: the model-contrastive term, and the previous round's weights."""

    def __init__(self, mu: float, tau: float) -> None:
        self.mu = mu
        self.tau = tau
        self.previous: dict[str, torch.Tensor] | None = None
        self._global: nn.Module | None = None
        self._previous: nn.Module | None = None

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        # The server's weights are loaded by now; round 1 has no previous model: the
        # global one stands in (the term is then constant).
        self._global = _frozen_copy(module.backbone)
        self._previous = _frozen_copy(module.backbone, self.previous)

    def _project(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return getattr(model, PROJECTION)(model.forward_features(images).bottleneck)

    def extra_losses(self, module: Any, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        images = batch[0]
        z = getattr(module.backbone, PROJECTION)(output.bottleneck)
        with torch.no_grad():
            self._global.to(images.device)
            self._previous.to(images.device)
            z_global = self._project(self._global, images)
            z_previous = self._project(self._previous, images)
        return {"moon": self.mu * model_contrastive_loss(z, z_global, z_previous, self.tau)}

    def on_fit_end(self, module: Any) -> dict[str, Any]:
        self.previous = {
            k: v.detach().cpu().clone() for k, v in module.backbone.state_dict().items()
        }
        self._global = self._previous = None
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = state.get("previous")


class Moon(FedAvg):
    """FedAvg + MOON's model-contrastive loss on the pooled bottleneck (``moon.mu``,
    ``moon.tau``). The projection head is part of the model and is averaged with it.

    Examples
    --------
    >>> from fedbcs_lightning.models.unet import UNet
    >>> net = Moon(projection_dim=8).configure_backbone(UNet(3, 2, width=4))
    >>> net.moon_projection(torch.zeros(2, net.bottleneck_channels, 4, 4)).shape
    torch.Size([2, 8])
    """

    name = "moon"
    Options = MoonOptions

    def __init__(self, mu: float = 1.0, tau: float = 0.5, projection_dim: int = 64) -> None:
        super().__init__()
        self.mu, self.tau, self.projection_dim = mu, tau, projection_dim

    @classmethod
    def from_config(cls, config) -> Moon:
        options = config.method_options()
        return cls(options.mu, options.tau, options.projection_dim)

    def configure_backbone(self, backbone: Any) -> Any:
        backbone.add_module(
            PROJECTION, PooledProjection(backbone.bottleneck_channels, self.projection_dim)
        )
        return backbone

    def client_hooks(self) -> list[ClientHook]:
        return [ModelContrast(self.mu, self.tau)]
