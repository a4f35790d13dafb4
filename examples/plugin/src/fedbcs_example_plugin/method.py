"""``fedavgm``: FedAvg with server momentum (Hsu et al., 2019), and sites that may bound
their own update before it leaves (``fedavgm.clip``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedbcs_lightning.config.checks import non_negative, within
from fedbcs_lightning.methods import (
    ClientHook,
    ClientUpdate,
    Instruction,
    Strategy,
    Weights,
    weighted_average,
)


@dataclass
class FedAvgMOptions:
    """The ``fedavgm:`` config section."""

    server_lr: float = 1.0  # step along the momentum
    momentum: float = 0.9  # beta of the server's momentum
    clip: float = 0.0  # a site scales its update to at most this L2 norm (0 = no bound)

    def validate(self) -> None:
        within(self, "momentum", 0.0, 1.0, closed="low")
        within(self, "server_lr", 0.0, 10.0, closed="high")
        non_negative(self, "clip", note="0 = no bound")


class ClipUpdate(ClientHook):
    """At the site: scale ``w_site - w_global`` to at most ``clip`` before upload."""

    def __init__(self, clip: float) -> None:
        self.clip = clip
        self.start: Weights = {}

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        self.start = {k: v.detach().clone() for k, v in instruction.weights.items()}

    def before_upload(self, update: ClientUpdate) -> ClientUpdate:
        keys = [k for k, v in update.weights.items() if v.is_floating_point()]
        delta = {k: update.weights[k] - self.start[k] for k in keys}
        norm = float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values())))
        scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
        for key in keys:
            update.weights[key] = self.start[key] + delta[key] * scale
        update.metrics["update_norm"] = norm
        return update


class FedAvgM(Strategy):
    """The server keeps a velocity ``v = momentum * v + (mean - w)`` and moves the global
    weights ``w += server_lr * v``; integer buffers take the mean update's value."""

    name = "fedavgm"
    Options = FedAvgMOptions

    def __init__(self, options: FedAvgMOptions | None = None) -> None:
        self.options = options or FedAvgMOptions()
        self.current: Weights = {}
        self.velocity: Weights = {}

    def client_hooks(self) -> list[ClientHook]:
        return [ClipUpdate(self.options.clip)] if self.options.clip > 0 else []

    def configure_train(self, server_round: int, weights: Weights, clients: list[str]):
        self.current = weights
        return super().configure_train(server_round, weights, clients)

    def aggregate_train(self, server_round: int, updates: list[ClientUpdate]):
        mean = weighted_average(updates)
        out: Weights = {}
        for key, value in mean.items():
            if not value.is_floating_point():
                out[key] = value
                continue
            step = value - self.current[key]
            velocity = self.velocity.get(key)
            velocity = step if velocity is None else self.options.momentum * velocity + step
            self.velocity[key] = velocity
            out[key] = self.current[key] + self.options.server_lr * velocity
        return out, {}

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": dict(self.velocity)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = dict(state.get("velocity", {}))
