"""Server-side strategies: symmetric configure/aggregate pairs, as in Flower.

A strategy never runs the loop. The in-process engine (or a
Flower server app) asks it what to send each client (``configure_train``), hands it what
came back (``aggregate_train``), and does the same for evaluation. Client-side behaviour a
method needs (an extra loss, prototypes to upload) comes from :meth:`Strategy.client_hooks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

Weights = dict[str, torch.Tensor]

#: The name of the extra client that trains on every site's data, for a strategy with
#: ``pools_training_data`` (method ``pooled``).
POOLED_CLIENT = "pooled"


def site_key(site: str, key: str) -> str:
    """The name under which a per-site tensor ``key`` of ``site`` is kept in the global
    weights (FedBN's BatchNorm, local models): ``"<site>/<key>"``.

    >>> site_key("site1", "head.weight")
    'site1/head.weight'
    """
    return f"{site}/{key}"


def split_site_key(name: str) -> tuple[str, str] | None:
    """``(site, key)`` of a name made by :func:`site_key`, or ``None`` for a shared tensor.

    >>> split_site_key("site1/head.weight"), split_site_key("head.weight")
    (('site1', 'head.weight'), None)
    """
    site, sep, key = name.partition("/")
    return (site, key) if sep else None


def site_tensors(weights: Mapping[str, Any], site: str) -> dict[str, Any]:
    """``site``'s own tensors of ``weights`` (made by :func:`site_key`), under their keys.

    >>> site_tensors({"a/w": 1, "b/w": 2, "w": 3}, "a")
    {'w': 1}
    """
    prefix = site_key(site, "")
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def shared_tensors(weights: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of ``weights`` that belong to no site.

    >>> shared_tensors({"a/w": 1, "w": 3})
    {'w': 3}
    """
    return {k: v for k, v in weights.items() if split_site_key(k) is None}


@dataclass
class Instruction:
    """What the server sends one client: the round, weights to load and method-specific
    extras (``config``: e.g. FedBCS's global prototypes)."""

    weights: Weights
    config: dict[str, Any] = field(default_factory=dict)
    server_round: int = 0  # the round this instruction belongs to (1-based; 0: none yet)


@dataclass
class ClientUpdate:
    """What one client returns after local training."""

    client: str
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PrototypeSharing(Protocol):
    """A method whose sites upload class prototypes beside the weights (FedBCS with CDPA,
    FPL). Layers that are not the method's (the private prototype release of
    ``privacy.mode=sample``) ask it through this protocol, never its attributes."""

    def shares_prototypes(self) -> bool:
        """Whether sites upload prototypes in this configuration."""
        ...

    def prototype_descriptors(self, backbone: Any) -> Callable[[Any], dict[str, Any]]:
        """The callable (a module of the configured ``backbone``) that maps a forward pass
        (:class:`~fedbcs_lightning.models.base.BackboneOutput`) to per-level descriptors
        (``{level: Descriptor}``) whose class means are the prototypes."""
        ...


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

    def before_upload(self, update: ClientUpdate) -> ClientUpdate:
        """The last look at what leaves the site (weights, payload, metrics), on both
        engines: e.g. clip and add noise for differential privacy."""
        return update

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


def robust_average(
    updates: list[ClientUpdate],
    rule: str,
    trim_fraction: float = 0.1,
    keys: list[str] | None = None,
) -> Weights:
    """Coordinate-wise ``"median"`` or ``"trimmed_mean"`` of the clients' tensors.

    Both ignore example counts: each client is one vote, so a few extreme (or malicious)
    values cannot move a weight far. ``trimmed_mean`` drops the ``floor(trim_fraction * n)``
    largest and smallest values of each weight (at most all but the middle one or two) and
    averages the rest; ``median`` averages the middle one or two. Integer buffers take the
    largest value, as in :func:`weighted_average`.

    Examples
    --------
    >>> import torch
    >>> values = {"a": 1.0, "b": 2.0, "c": 90.0}
    >>> ups = [ClientUpdate(c, {"w": torch.tensor([v])}, 1) for c, v in values.items()]
    >>> robust_average(ups, "median")["w"]
    tensor([2.])
    """
    if not updates:
        raise ValueError("cannot aggregate zero client updates")
    if rule not in ("median", "trimmed_mean"):
        raise ValueError(f"unknown robust aggregation {rule!r}; use median or trimmed_mean")
    n = len(updates)
    if rule == "median":
        low, high = (n - 1) // 2, n // 2 + 1
    else:
        cut = min(int(trim_fraction * n), (n - 1) // 2)
        low, high = cut, n - cut
    keys = list(updates[0].weights) if keys is None else keys
    out: Weights = {}
    for key in keys:
        tensors = [u.weights[key] for u in updates]
        if tensors[0].is_floating_point():
            ordered = torch.stack([t.double() for t in tensors]).sort(dim=0).values
            out[key] = ordered[low:high].mean(dim=0).to(tensors[0].dtype)
        else:
            out[key] = torch.stack(tensors).max(0).values
    return out


class Strategy:
    """Base strategy: send the global weights to everyone, keep whatever comes back first.

    Subclasses override ``aggregate_train`` (and others as needed).
    """

    name = "base"
    #: The dataclass of the method's options (its config section, named after the method
    #: as registered), or None. The config validates the section (``validate()``).
    Options: type | None = None
    #: With True, the federation gets one extra client that trains on every site's data.
    pools_training_data = False

    #: How the weights of the round's updates are combined: mean (weighted by examples),
    #: median or trimmed_mean (coordinate-wise, see :func:`robust_average`).
    aggregation = "mean"
    trim_fraction = 0.1

    @classmethod
    def from_config(cls, config: Any) -> Strategy:
        """Build from a resolved config: ``cls(options)`` with the method's section when
        the method declares :attr:`Options`, else ``cls()``. Override to read more."""
        if cls.Options is None:
            return cls()
        return cls(config.method_options())

    def configure_aggregation(self, rule: str, trim_fraction: float = 0.1) -> None:
        """Choose the rule :meth:`FedAvg.average` applies (config ``server.aggregation``)."""
        self.aggregation, self.trim_fraction = rule, trim_fraction

    def configure_backbone(self, backbone: Any) -> Any:
        """Add the method's layers to a freshly built backbone (e.g. FSR, fusion heads)."""
        return backbone

    def is_local(self, key: str) -> bool:
        """Whether tensor ``key`` stays with each site (never averaged: FedBN's BatchNorm,
        HarmoFL's amplitude spectrum). The server's update-size bound
        (``server.max_update_norm``) measures the shared tensors only. None by default."""
        return False

    def check_payload(self, update: ClientUpdate) -> None:
        """Raise ``ValueError`` saying what is wrong if ``update.payload`` (what the method
        uploads beside the weights, e.g. prototypes) is malformed. The server calls it on
        every update before aggregation. The default rejects non-finite values in any
        tensor or number of the payload; methods with a payload check its structure too."""
        bad = _non_finite(update.payload)
        if bad:
            raise ValueError(f"non-finite values in {bad}")

    def client_hooks(self) -> list[ClientHook]:
        """Client-side hooks this method needs (fresh objects per client)."""
        return []

    def privacy_refusal(self, mode: str) -> str | None:
        """Why this method cannot run under ``privacy.mode=mode`` (``sample``: DP-SGD at
        each site; ``client``: clipped updates, noise at the server), or ``None``."""
        return None

    def configure_train(
        self, server_round: int, weights: Weights, clients: list[str]
    ) -> dict[str, Instruction]:
        return {c: Instruction(weights, server_round=server_round) for c in clients}

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        raise NotImplementedError

    def configure_evaluate(
        self, server_round: int, weights: Weights, clients: list[str]
    ) -> dict[str, Instruction]:
        return {c: Instruction(weights, server_round=server_round) for c in clients}

    def aggregate_evaluate(
        self, server_round: int, results: Mapping[str, Mapping[str, float]]
    ) -> dict[str, float]:
        from fedbcs_lightning.evaluation.metrics import mean_over_sites

        return mean_over_sites(results)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _non_finite(value: Any, where: str = "payload") -> str | None:
    """Where a non-finite number hides in a nested payload, or ``None``."""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return None if finite else where
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}[{key!r}]")
        if found:
            return found
    return None
