"""The client side of privacy: hooks on the one path every upload takes.

:class:`SamplePrivacy` (``privacy.mode=sample``) makes a site's upload differentially
private with respect to each of its training images: DP-SGD for the weights, a noised
release for prototypes, and only the privacy spent among the metrics (training losses
are statistics of the images too). :class:`UpdateClipping` (``privacy.mode=client``)
bounds a site's whole update for the server's noise
(:class:`~fedbcs_lightning.privacy.server.ClientLevelPrivacy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from fedbcs_lightning.methods.base import ClientHook, ClientUpdate, Instruction
from fedbcs_lightning.privacy.accounting import PrivacyLedger
from fedbcs_lightning.privacy.prototypes import effective_noise_multiplier, release_prototypes

EPSILON = "privacy/epsilon"
PLANNED = "privacy/epsilon_planned"


class SamplePrivacy(ClientHook):
    """DP-SGD and private prototypes for one site; its ledger says what was spent.

    ``loader`` is the site's Poisson-sampled training loader, ``steps_per_round`` the
    optimiser steps a round takes, ``rounds`` the run's length (for the planned budget).
    ``describe`` (FedBCS's and FPL's prototype descriptors, or ``None``) says whether
    the site uploads prototypes.
    """

    def __init__(
        self,
        options,
        loader,
        steps_per_round: int,
        rounds: int,
        noise: torch.Generator,
        describe: Callable[[Any], Any] | None = None,
    ) -> None:
        self.options = options
        self.loader = loader
        self.sample_rate = float(loader.sample_rate)
        self.expected_batch_size = max(1, round(len(loader.dataset) * self.sample_rate))
        self.steps_per_round = steps_per_round
        self.rounds = rounds
        self.noise = noise
        #: backbone -> its prototype descriptor module, for a method that uploads
        #: prototypes (:class:`~fedbcs_lightning.methods.base.PrototypeSharing`), else None
        self.describe = describe
        self.uploads_prototypes = describe is not None
        self.ledger = PrivacyLedger(options.accountant, options.delta)
        self.server_round = 0

    def round_releases(self, steps: int | None = None) -> list[tuple[float, float, int]]:
        """The Gaussian releases of one round: DP-SGD steps and, if any, prototypes."""
        entries = [(self.options.noise_multiplier, self.sample_rate, steps or self.steps_per_round)]
        if self.uploads_prototypes:
            sigma = effective_noise_multiplier(self.options.prototype_noise_multiplier)
            entries.append((sigma, 1.0, 1))
        return entries

    def planned_epsilon(self) -> float:
        """Epsilon at ``options.delta`` once every round of the run has been trained."""
        remaining = self.rounds - self.server_round
        extra = [(s, q, n * remaining) for s, q, n in self.round_releases()]
        return self.ledger.epsilon(extra)

    def configure_optimizer(self, module: Any, optimizer: Any) -> Any:
        from opacus.optimizers import DPOptimizer

        return DPOptimizer(
            optimizer,
            noise_multiplier=self.options.noise_multiplier,
            max_grad_norm=self.options.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            generator=self.noise,
        )

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        self.server_round = instruction.server_round

    def on_fit_end(self, module: Any) -> dict[str, Any]:
        training, *prototypes = self.round_releases(module.steps)
        self.ledger.record(*training)
        if not self.uploads_prototypes:
            return {}
        bank = release_prototypes(
            module.backbone,
            self.describe(module.backbone),
            self.loader.dataset,
            clip=self.options.prototype_clip,
            noise_multiplier=self.options.prototype_noise_multiplier,
            generator=self.noise,
        )
        for release in prototypes:
            self.ledger.record(*release)
        return {"prototypes": bank.to_dict()}

    def before_upload(self, update: ClientUpdate) -> ClientUpdate:
        update.metrics = {EPSILON: self.ledger.epsilon(), PLANNED: self.planned_epsilon()}
        return update

    def state_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger.state_dict(),
            "noise": self.noise.get_state(),
            "round": self.server_round,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ledger.load_state_dict(state["ledger"])
        self.noise.set_state(state["noise"])
        self.server_round = state["round"]


class UpdateClipping(ClientHook):
    """Scale a site's update ``w_site - w_global`` (every floating-point tensor the server
    sent) to an L2 norm of at most ``bound``."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.sent: dict[str, torch.Tensor] = {}

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        self.sent = {
            k: v.detach().clone() for k, v in instruction.weights.items() if v.is_floating_point()
        }

    def before_upload(self, update: ClientUpdate) -> ClientUpdate:
        update.weights = clip_update(update.weights, self.sent, self.bound)
        return update


def clip_update(
    weights: dict[str, torch.Tensor], sent: dict[str, torch.Tensor], bound: float
) -> dict[str, torch.Tensor]:
    """``sent + (weights - sent) * min(1, bound / ||weights - sent||)`` on the floating-point
    tensors of ``sent``; other tensors unchanged.

    >>> out = clip_update({"w": torch.tensor([3.0, 4.0])}, {"w": torch.zeros(2)}, 1.0)
    >>> out["w"].tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    keys = [k for k, v in sent.items() if k in weights and v.is_floating_point()]
    norm = math.sqrt(
        sum(float((weights[k].double() - sent[k].double()).pow(2).sum()) for k in keys)
    )
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    out = dict(weights)
    for k in keys:
        delta = weights[k].double() - sent[k].double()
        out[k] = (sent[k].double() + delta * scale).to(weights[k].dtype)
    return out
