"""What the server accepts: every client update is checked here before aggregation.

Both engines (in-process and Flower) pass each :class:`ClientUpdate` through
:meth:`UpdateValidator.check` before the strategy sees it. A bad update raises
:class:`RejectedUpdate` with the reason; the engine leaves it out of the round and logs it,
and stops the run (:class:`FederationStopped`) when fewer than ``server.min_clients``
updates remain or when the aggregate itself is not finite.

Checked: the key set (every tensor of the model, nothing else), each tensor's exact shape
(no broadcasting) and dtype, finite values, a positive integer example count, the method's
payload (:meth:`Strategy.check_payload`, e.g. prototype dimensions and finiteness), and,
with ``max_update_norm > 0``, ``||update - sent|| <= max_update_norm * ||sent||`` over the
floating-point tensors the server sent.

Examples
--------
>>> import torch
>>> from fedbcs_lightning.methods import ClientUpdate, Strategy
>>> validator = UpdateValidator({"w": torch.zeros(2)})
>>> validator.check(ClientUpdate("a", {"w": torch.ones(2)}, 3), {"w": torch.zeros(2)}, Strategy())
>>> bad = ClientUpdate("b", {"w": torch.tensor([1.0, float("nan")])}, 3)
>>> validator.check(bad, {"w": torch.zeros(2)}, Strategy())
Traceback (most recent call last):
...
fedbcs_lightning.federation.updates.RejectedUpdate: client b: non-finite values in 'w'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedbcs_lightning.io import non_finite

if TYPE_CHECKING:  # torch loads with the first check, not with the exceptions below
    import torch

    from fedbcs_lightning.methods.base import ClientUpdate, Strategy, Weights


class RejectedUpdate(ValueError):
    """A client's update is unusable; the message names the client and the reason."""

    def __init__(self, client: str, reason: str) -> None:
        super().__init__(f"client {client}: {reason}")
        self.client, self.reason = client, reason


class FederationStopped(RuntimeError):
    """The run cannot go on (too few usable updates, a non-finite aggregate); the last
    complete round is kept and the message says what happened."""


class UpdateValidator:
    """Checks updates against ``template``: the keys, shapes and dtypes of one client's
    model (the same for every client of a federation)."""

    def __init__(self, template: Mapping[str, torch.Tensor], max_update_norm: float = 0.0) -> None:
        self.spec = {k: (tuple(v.shape), v.dtype) for k, v in template.items()}
        self.max_update_norm = max_update_norm

    def check(self, update: ClientUpdate, sent: Mapping[str, Any], strategy: Strategy) -> None:
        """Raise :class:`RejectedUpdate` if ``update`` (answering weights ``sent``) is bad."""
        import torch

        def reject(reason: str) -> None:
            raise RejectedUpdate(update.client, reason)

        count = update.num_examples
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            reject(f"example count must be a positive integer, got {count!r}")
        weights = update.weights
        if not isinstance(weights, Mapping):
            reject(f"weights must be a mapping of tensors, got {type(weights).__name__}")
        missing = sorted(set(self.spec) - set(weights))
        extra = sorted(set(weights) - set(self.spec))
        if missing or extra:
            parts = [
                f"missing {_some(missing)}" if missing else "",
                f"extra {_some(extra)}" if extra else "",
            ]
            reject("wrong weights: " + ", ".join(p for p in parts if p))
        for key, (shape, dtype) in self.spec.items():
            tensor = weights[key]
            if not isinstance(tensor, torch.Tensor):
                reject(f"{key!r} is a {type(tensor).__name__}, not a tensor")
            if tuple(tensor.shape) != shape:
                reject(f"{key!r} has shape {tuple(tensor.shape)}, expected {shape}")
            if tensor.dtype != dtype:
                reject(f"{key!r} has dtype {tensor.dtype}, expected {dtype}")
        bad = non_finite(weights)
        if bad:
            reject(f"non-finite values in {bad[0]!r}")
        try:
            strategy.check_payload(update)
        except ValueError as err:
            reject(f"bad payload: {err}")
        if self.max_update_norm > 0:  # local tensors are never averaged: not bounded
            shared = {k: v for k, v in sent.items() if not strategy.is_local(k)}
            ratio = relative_change(weights, shared)
            if ratio > self.max_update_norm:
                reject(
                    f"update too large: ||update - global|| is {ratio:.3g} x ||global||, above "
                    f"server.max_update_norm={self.max_update_norm:g}"
                )

    @staticmethod
    def check_aggregate(weights: Weights, server_round: int) -> None:
        """Raise :class:`FederationStopped` if the aggregated weights are not finite."""
        bad = non_finite(weights)
        if bad:
            raise FederationStopped(
                f"round {server_round}: the aggregated weights hold non-finite values "
                f"({_some(bad)}); nothing of this round was kept"
            )


def relative_change(weights: Mapping[str, torch.Tensor], sent: Mapping[str, Any]) -> float:
    """``||weights - sent|| / ||sent||`` over the floating-point tensors both hold."""
    import torch

    keys = [
        k
        for k, v in sent.items()
        if k in weights and isinstance(v, torch.Tensor) and v.is_floating_point()
    ]
    diff = sum(float((weights[k].double() - sent[k].double()).pow(2).sum()) for k in keys)
    norm = sum(float(sent[k].double().pow(2).sum()) for k in keys)
    return math.sqrt(diff) / max(math.sqrt(norm), 1e-12)


def _some(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
