"""Baselines on the same strategy API: FedProx, FedBN, local and pooled training.

Each is a server-side strategy plus, where the method needs one, a client hook; none
touches the federated loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedbcs_lightning.methods.base import (
    POOLED_CLIENT,
    ClientHook,
    ClientUpdate,
    Instruction,
    Weights,
    shared_tensors,
    site_key,
    site_tensors,
    split_site_key,
)
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.methods.options import FedProxOptions


class ProximalTerm(ClientHook):
    """FedProx's client loss ``mu / 2 * ||w - w_global||^2`` over the trainable weights."""

    def __init__(self, mu: float) -> None:
        self.mu = mu
        self.anchor: dict[str, torch.Tensor] = {}

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        self.anchor = {k: v.detach().clone() for k, v in instruction.weights.items()}

    def extra_losses(self, module: Any, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        terms = [
            ((param - self.anchor[name].to(param.device)) ** 2).sum()
            for name, param in module.backbone.named_parameters()
            if param.requires_grad and name in self.anchor
        ]
        return {"proximal": 0.5 * self.mu * torch.stack(terms).sum()} if terms else {}


class FedProx(FedAvg):
    """FedAvg with a proximal term that keeps local weights near the global ones
    (Li et al., MLSys 2020).

    Examples
    --------
    >>> [type(h).__name__ for h in FedProx(mu=0.01).client_hooks()]
    ['ProximalTerm']
    """

    name = "fedprox"
    Options = FedProxOptions

    def __init__(self, mu: float = 0.01) -> None:
        super().__init__()
        self.mu = mu

    @classmethod
    def from_config(cls, config) -> FedProx:
        return cls(config.method_options().mu)

    def client_hooks(self) -> list[ClientHook]:
        return [ProximalTerm(self.mu)]


class PartlyLocal(FedAvg):
    """FedAvg over every tensor except those :meth:`local_modules` names: those stay with
    each site, are never averaged, and each site trains and evaluates with its own. The
    global weights keep every site's local tensors under ``<site>/<key>`` (as ``local``
    keeps whole models), so a checkpoint holds each site's complete model."""

    def __init__(self) -> None:
        super().__init__()
        self.local_prefixes: tuple[str, ...] = ()
        self.previous: Weights = {}  # the global weights of the round being trained

    def local_modules(self, backbone: nn.Module) -> list[str]:
        """Names of the modules whose tensors stay local."""
        return []

    def configure_backbone(self, backbone: Any) -> Any:
        backbone = super().configure_backbone(backbone)
        self.local_prefixes = tuple(f"{name}." for name in self.local_modules(backbone))
        return backbone

    def is_local(self, key: str) -> bool:
        return key.startswith(self.local_prefixes) if self.local_prefixes else False

    def for_client(self, weights: Weights, client: str) -> Weights:
        """The shared weights plus ``client``'s own local tensors (none before round 1's
        aggregation: the client keeps its initial ones)."""
        own = site_tensors(weights, client)
        shared = {k: v for k, v in shared_tensors(weights).items() if not self.is_local(k)}
        return {**shared, **own}

    def configure_train(self, server_round: int, weights: Weights, clients: list[str]):
        self.previous = weights
        return self.configure_evaluate(server_round, weights, clients)

    def configure_evaluate(self, server_round: int, weights: Weights, clients: list[str]):
        return {
            c: Instruction(self.for_client(weights, c), server_round=server_round) for c in clients
        }

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        shared = [k for k in updates[0].weights if not self.is_local(k)]
        weights = self.average(updates, keys=shared)
        # Sites without an accepted update this round keep their local tensors.
        weights.update({k: v for k, v in self.previous.items() if split_site_key(k)})
        for update in updates:
            weights.update(
                {
                    site_key(update.client, k): v
                    for k, v in update.weights.items()
                    if self.is_local(k)
                }
            )
        return weights, {}


class FedBN(PartlyLocal):
    """FedAvg that keeps BatchNorm weights and statistics local (Li et al., ICLR 2021)."""

    name = "fedbn"

    def privacy_refusal(self, mode: str) -> str | None:
        if mode == "sample":
            return (
                "keeps BatchNorm layers local, and per-image gradient clipping needs "
                "BatchNorm replaced by GroupNorm (whose affine layers FedAvg shares); use fedavg"
            )
        return None

    def local_modules(self, backbone: nn.Module) -> list[str]:
        return [
            name
            for name, module in backbone.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
        ]


class LocalOnly(FedAvg):
    """Every site trains alone: nothing is averaged. The "global" weights are the
    clients' own, stored under ``<client>/<key>`` and handed back to each client."""

    name = "local"

    def privacy_refusal(self, mode: str) -> str | None:
        if mode == "client":
            return "averages nothing, so there is no aggregate for the server's noise to cover"
        return None

    def __init__(self) -> None:
        super().__init__()
        self.previous: Weights = {}  # the global weights of the round being trained

    @staticmethod
    def _own(weights: Weights, client: str) -> Weights:
        return site_tensors(weights, client) or weights  # round 1: the initial weights

    def configure_train(self, server_round: int, weights: Weights, clients: list[str]):
        self.previous = weights
        return self.configure_evaluate(server_round, weights, clients)

    def configure_evaluate(self, server_round: int, weights: Weights, clients: list[str]):
        return {c: Instruction(self._own(weights, c), server_round=server_round) for c in clients}

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        # A site without an accepted update this round keeps its model (none in round 1:
        # it starts again from the common initial weights).
        kept = {k: v for k, v in self.previous.items() if split_site_key(k)}
        own = {site_key(u.client, k): v for u in updates for k, v in u.weights.items()}
        return {**kept, **own}, {}


class Pooled(FedAvg):
    """All sites' training data in one client: the centralised upper bound (it ignores
    the privacy constraint that motivates federated learning). The model is evaluated on
    each site's validation and test data as usual.

    ``pools_training_data`` asks :func:`~fedbcs_lightning.federation.build.build_clients` for
    one extra client, ``"pooled"``, that trains on the union of the sites' training sets;
    the site clients only evaluate.
    """

    name = "pooled"
    pools_training_data = True

    def privacy_refusal(self, mode: str) -> str | None:
        return "trains on every site's images in one place; there is no site to protect"

    def configure_train(self, server_round: int, weights: Weights, clients: list[str]):
        if POOLED_CLIENT not in clients:
            raise ValueError(f"method pooled needs a client named {POOLED_CLIENT!r}")
        return {POOLED_CLIENT: Instruction(weights, server_round=server_round)}

    def configure_evaluate(self, server_round: int, weights: Weights, clients: list[str]):
        return {
            c: Instruction(weights, server_round=server_round)
            for c in clients
            if c != POOLED_CLIENT
        }

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        return dict(updates[0].weights), {}
