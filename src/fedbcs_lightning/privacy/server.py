"""Client-level differential privacy at the server (``privacy.mode=client``).

Each site clips its whole update to ``update_clip``
(:class:`~fedbcs_lightning.privacy.hooks.UpdateClipping`); the server averages the clipped
updates with equal weights and adds Gaussian noise of ``noise_multiplier * update_clip /
m`` (``m`` updates) to every shared floating-point tensor: DP-FedAvg with fixed clipping,
protecting each *site* in the released model. The server sees the clipped updates, so it
must be trusted; the guarantee is about what leaves the server. It needs many sites:
with a handful, noise that bounds one site's influence swamps the average.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fedbcs_lightning.methods.base import ClientHook, ClientUpdate, Strategy, Weights
from fedbcs_lightning.privacy.accounting import PrivacyLedger
from fedbcs_lightning.privacy.hooks import EPSILON, PLANNED, UpdateClipping


class ClientLevelPrivacy:
    """Wraps ``strategy``: equal-weight mean of clipped updates plus calibrated noise.

    Everything else (backbone, payload checks, evaluation) is ``strategy``'s.
    """

    def __init__(self, strategy: Strategy, options, rounds: int, noise: torch.Generator) -> None:
        self.inner = strategy
        self.options = options
        self.rounds = rounds
        self.noise = noise
        self.ledger = PrivacyLedger(options.accountant, options.delta)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def client_hooks(self) -> list[ClientHook]:
        return [*self.inner.client_hooks(), UpdateClipping(self.options.update_clip)]

    def planned_epsilon(self) -> float:
        done = sum(n for _, _, n in self.ledger.history)
        return self.ledger.epsilon([(self.options.noise_multiplier, 1.0, self.rounds - done)])

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        equal = [dataclasses.replace(u, num_examples=1) for u in updates]
        weights, metrics = self.inner.aggregate_train(server_round, equal)
        std = self.options.noise_multiplier * self.options.update_clip / len(updates)
        shared = set(updates[0].weights)
        noisy = {}
        for key, value in weights.items():
            if key in shared and value.is_floating_point():
                noise = torch.randn(value.shape, generator=self.noise, dtype=torch.float64)
                value = (value.double() + std * noise).to(value.dtype)
            noisy[key] = value
        # every site takes part in every round (the strategies configure them all)
        self.ledger.record(self.options.noise_multiplier, 1.0, 1)
        metrics = {**metrics, EPSILON: self.ledger.epsilon(), PLANNED: self.planned_epsilon()}
        return noisy, metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.inner.state_dict(),
            "ledger": self.ledger.state_dict(),
            "noise": self.noise.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["strategy"])
        self.ledger.load_state_dict(state["ledger"])
        self.noise.set_state(state["noise"])
