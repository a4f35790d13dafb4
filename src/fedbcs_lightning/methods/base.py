"""Server-side strategies: symmetric configure/aggregate pairs, as in Flower.

A strategy never runs the loop. The in-process engine (or a
Flower server app) asks it what to send each client (``configure_train``), hands it what
came back (``aggregate_train``), and does the same for evaluation. Client-side behaviour a
method needs (an extra loss, prototypes to upload) comes from :meth:`Strategy.client_hooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

Weights = dict[str, torch.Tensor]


@dataclass
class Instruction:
    """What the server sends one client: weights to load and method-specific extras."""

    weights: Weights
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """What one client returns after local training."""

    client: str
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


class ClientHook:
    """Client-side part of a method. Every hook is a no-op; override what you need."""

    def configure_optimizer(self, module: Any, optimizer: Any) -> Any:
        """Wrap or replace the client's optimiser (e.g. weight perturbation)."""
        return optimizer

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        """Before local training, with what the server sent."""

    def extra_losses(self, module: Any, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        """Terms added to the segmentation loss at each training step."""
        return {}

    def on_train_batch_end(self, module: Any, batch: Any, output: Any, epoch: int) -> None:
        """After each optimisation step (``epoch`` counts from 0 within this round)."""

    def on_fit_end(self, module: Any) -> dict[str, Any]:
        """After local training; returns the payload uploaded beside the weights."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Client-side state that must outlive a round (kept in resumable checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def weighted_average(
    updates: list[ClientUpdate],
    weight_of: Callable[[ClientUpdate], float] = lambda u: float(u.num_examples),
    keys: list[str] | None = None,
) -> Weights:
    """Average the clients' tensors under ``keys`` (all by default), weighted by ``weight_of``.

    Integer buffers (BatchNorm's ``num_batches_tracked``) take the largest value.
    """
    if not updates:
        raise ValueError("cannot aggregate zero client updates")
    total = sum(weight_of(u) for u in updates)
    if total <= 0:
        raise ValueError("client weights sum to zero")
    keys = list(updates[0].weights) if keys is None else keys
    out: Weights = {}
    for key in keys:
        tensors = [u.weights[key] for u in updates]
        if tensors[0].is_floating_point():
            acc = torch.zeros_like(tensors[0], dtype=torch.float64)
            for u, t in zip(updates, tensors, strict=True):
                acc += t.double() * (weight_of(u) / total)
            out[key] = acc.to(tensors[0].dtype)
        else:
            out[key] = torch.stack(tensors).max(0).values
    return out


class Strategy:
    """Base strategy: send the global weights to everyone, keep whatever comes back first.

    Subclasses override ``aggregate_train`` (and others as needed).
    """

    name = "base"
    #: With True, the federation gets one extra client that trains on every site's data.
    pools_training_data = False

    def configure_backbone(self, backbone: Any) -> Any:
        """Add the method's layers to a freshly built backbone (e.g. FSR, fusion heads)."""
        return backbone

    def client_hooks(self) -> list[ClientHook]:
        """Client-side hooks this method needs (fresh objects per client)."""
        return []

    def configure_train(
        self, server_round: int, weights: Weights, clients: list[str]
    ) -> dict[str, Instruction]:
        return {c: Instruction(weights, {"round": server_round}) for c in clients}

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        raise NotImplementedError

    def configure_evaluate(
        self, server_round: int, weights: Weights, clients: list[str]
    ) -> dict[str, Instruction]:
        return {c: Instruction(weights, {"round": server_round}) for c in clients}

    def aggregate_evaluate(
        self, server_round: int, results: Mapping[str, Mapping[str, float]]
    ) -> dict[str, float]:
        from fedbcs_lightning.evaluation.metrics import mean_over_sites

        return mean_over_sites(results)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
