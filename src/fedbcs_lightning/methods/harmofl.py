"""HarmoFL: harmonising local and global drifts (Jiang et al., AAAI 2022).

Local drift: each input image's Fourier amplitude is replaced by its site's running mean
amplitude, its phase kept (amplitude normalisation; the running amplitude stays with the
site). Global drift: every local step uses the gradient at weights perturbed by
``alpha`` along the normalised gradient (weight perturbation), which seeks flat minima
that survive averaging.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedbcs_lightning.methods.base import ClientHook
from fedbcs_lightning.methods.baselines import PartlyLocal
from fedbcs_lightning.methods.options import HarmoFLOptions


class AmplitudeNormalization(nn.Module):
    """Replace each image's amplitude spectrum with the running mean amplitude of the
    images seen in training (per channel and frequency), keeping the image's phase.

    >>> norm = AmplitudeNormalization(channels=1, size=8)
    >>> a, b = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    >>> _ = norm(torch.cat([a, b]))  # training: the running amplitude is their mean
    >>> norm = norm.eval()
    >>> torch.allclose(norm(a), norm(2 * a), atol=1e-5)  # scaling changes amplitude only
    True
    """

    #: Takes images of the training size only (the running amplitude has that shape), so
    #: whole images are segmented with sliding windows of that size.
    fixed_input_size = True

    def __init__(self, channels: int, size: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_amplitude", torch.zeros(channels, size, size))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.running_amplitude.shape):
            raise ValueError(
                f"amplitude normalisation expects images of shape "
                f"{tuple(self.running_amplitude.shape)} (channels, size, size), got "
                f"{tuple(x.shape[1:])}; train and evaluate at data.image_size"
            )
        spectrum = torch.fft.fft2(x.float())
        amplitude = spectrum.abs()
        if self.training:
            with torch.no_grad():
                batch_mean = amplitude.mean(dim=0)
                if self.seen == 0:
                    self.running_amplitude.copy_(batch_mean)
                else:
                    self.running_amplitude.lerp_(batch_mean, self.momentum)
                self.seen += 1
        normalised = torch.polar(self.running_amplitude.expand_as(amplitude), spectrum.angle())
        return torch.fft.ifft2(normalised).real.to(x.dtype)


class WeightPerturbation(torch.optim.Optimizer):
    """Wraps an optimiser: each step evaluates the gradient at ``w + alpha * g / ||g||``
    (``g`` the gradient at ``w``), restores ``w`` and lets the wrapped optimiser step with
    that gradient. Needs a closure that recomputes loss and gradients (Lightning passes one).
    The state is the wrapped optimiser's.
    """

    def __init__(self, base: torch.optim.Optimizer, alpha: float = 0.05) -> None:
        super().__init__(base.param_groups, {"alpha": alpha})
        self.base = base
        self.alpha = alpha
        self.param_groups = base.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("weight perturbation needs a closure that recomputes the loss")
        with torch.enable_grad():
            loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if params:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            deltas = [p.grad * (self.alpha / (norm + 1e-12)) for p in params]
            for param, delta in zip(params, deltas, strict=True):
                param.add_(delta)
            with torch.enable_grad():
                closure()
            for param, delta in zip(params, deltas, strict=True):
                param.sub_(delta)
        self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)


class PerturbWeights(ClientHook):
    """Client side of HarmoFL: wraps the optimiser in :class:`WeightPerturbation`."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def configure_optimizer(self, module: Any, optimizer: Any) -> Any:
        return WeightPerturbation(optimizer, self.alpha)


class HarmoFL(PartlyLocal):
    """FedAvg + amplitude normalisation of the inputs (kept local) + weight perturbation
    (``harmofl.alpha``, ``harmofl.momentum``)."""

    name = "harmofl"
    Options = HarmoFLOptions

    def privacy_refusal(self, mode: str) -> str | None:
        if mode == "sample":
            return (
                "perturbs the weights along each batch's gradient before the step, and that "
                "gradient is neither clipped per image nor noised"
            )
        return None

    def __init__(self, image_size: int, alpha: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        self.image_size, self.alpha, self.momentum = image_size, alpha, momentum

    @classmethod
    def from_config(cls, config) -> HarmoFL:
        options = config.method_options()
        return cls(config.data.image_size, options.alpha, options.momentum)

    def configure_backbone(self, backbone: Any) -> Any:
        backbone.set_input_transform(
            AmplitudeNormalization(backbone.in_channels, self.image_size, self.momentum)
        )
        return super().configure_backbone(backbone)

    def local_modules(self, backbone: nn.Module) -> list[str]:
        return ["input_transform"]

    def client_hooks(self) -> list[ClientHook]:
        return [PerturbWeights(self.alpha)]
