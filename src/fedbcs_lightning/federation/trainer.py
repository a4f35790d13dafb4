"""The federated loop: rounds of configure -> local fit -> aggregate -> validate.

The loop knows nothing about any method; strategies and callbacks plug in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.federation.client import FederatedClient
from fedbcs_lightning.federation.engine import Clients, LocalClients
from fedbcs_lightning.federation.updates import FederationStopped, RejectedUpdate, UpdateValidator
from fedbcs_lightning.methods.base import Strategy, Weights, site_key


@dataclass
class FitResult:
    """Per-site test metrics of the model selected on validation and of the last round."""

    best_round: int
    test_selected: dict[str, dict[str, float]]
    test_last: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    selected_weights: Weights | None = None
    last_weights: Weights | None = None


class FederatedTrainer:
    """Runs ``rounds`` rounds over ``clients`` with ``strategy``.

    Each round, the clients the strategy configures (all, by default) train, and those it
    configures for evaluation are scored. Every update passes ``validator`` (by default
    an :class:`UpdateValidator` of the first client's model) before aggregation: a rejected
    one is left out and reported to the callbacks (``on_update_rejected``) and in the
    round's record; with fewer than ``min_clients`` accepted updates (or all configured
    clients, if fewer) the run stops with :class:`FederationStopped`, the last complete
    round kept. The model selected for the final report is the round with the best mean
    validation Dice over sites, among the rounds that the most sites validated (all of
    them, unless a site dropped out: means over the same sites are compared); the last
    round is reported beside it. Test data is used
    only at the end.

    Callbacks run in the order given, except that those with ``runs_last`` (the checkpoint
    writer) run after all others: a round in a saved state is a round every other callback
    has already recorded.

    Examples
    --------
    See :func:`fedbcs_lightning.api.fit`.
    """

    def __init__(
        self,
        clients: list[FederatedClient] | Clients,
        strategy: Strategy,
        rounds: int,
        callbacks: list[FederatedCallback] | None = None,
        selection_metric: str = "dice",
        validator: UpdateValidator | None = None,
        min_clients: int = 1,
        eval_every: int = 1,
    ) -> None:
        # A list of clients runs in this process; otherwise the clients are reached
        # through their own Clients (fedbcs_lightning.federation.engine), e.g. Flower's.
        self.backend: Clients = LocalClients(clients) if isinstance(clients, list) else clients
        self.clients = self.backend.clients
        if min_clients > len(self.clients):
            raise ValueError(
                f"server.min_clients={min_clients} but the federation has "
                f"{len(self.clients)} clients"
            )
        self.strategy = strategy
        self.rounds = rounds
        callbacks = list(callbacks or [])
        keys = [state_key(cb) for cb in callbacks if _stateful(cb)]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(
                f"callbacks share the state key {', '.join(map(repr, repeated))}; their saved "
                "states would overwrite each other: give each instance its own state_key"
            )
        self.callbacks = sorted(callbacks, key=lambda c: bool(getattr(c, "runs_last", False)))
        if validator is None:
            if not self.backend.local:
                raise ValueError("remote clients need a validator")
            validator = UpdateValidator(next(iter(self.clients.values())).get_weights())
        self.validator = validator
        self.min_clients = min_clients
        self.eval_every = eval_every
        self.selection_metric = selection_metric
        self.server_round = 0
        self.round_clients: list[str] = list(self.clients)  # the clients training this round
        self.history: list[dict[str, Any]] = []

    @property
    def local_clients(self) -> dict[str, FederatedClient]:
        """The clients whose data are in this process (none when sites are remote):
        what callbacks that draw predictions may use."""
        return self.clients if self.backend.local else {}

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def evaluate(self, weights: Weights, split: str, surface_metrics: bool = False):
        names = list(self.clients)
        instructions = self.strategy.configure_evaluate(self.server_round, weights, names)
        per_site = self.backend.evaluate(
            instructions,
            split,
            surface_metrics,
            lambda name: self._call("on_site_evaluated", split, name),
        )
        return per_site, self.strategy.aggregate_evaluate(self.server_round, per_site)

    def fit(self, weights: Weights) -> FitResult:
        """Train from ``weights``, or, after :meth:`load_state_dict`, from where the saved
        run stopped (``weights`` is then ignored). An exception (Ctrl-C included) reaches
        the callbacks' ``on_exception`` before it propagates."""
        try:
            return self._fit(weights)
        except BaseException as err:
            self._call("on_exception", err)
            raise

    def _fit(self, weights: Weights) -> FitResult:
        names = list(self.clients)
        if self.server_round == 0:
            self.weights = weights
            self.best_score, self.best_round, self.best_sites = -float("inf"), 0, 0
            self.best_weights = copy.deepcopy(weights)
        self._call("on_fit_start")
        for server_round in range(self.server_round + 1, self.rounds + 1):
            self.server_round = server_round
            instructions = self.strategy.configure_train(server_round, self.weights, names)
            self.round_clients = list(instructions)
            self._call("on_round_start", server_round)
            updates, rejected = [], {}
            outcomes = self.backend.fit(
                instructions, partial(self._call, "on_client_fit_start", server_round)
            )
            for name, outcome in outcomes:
                try:
                    if isinstance(outcome, RejectedUpdate):
                        raise outcome
                    self.validator.check(outcome, instructions[name].weights, self.strategy)
                except RejectedUpdate as err:
                    rejected[name] = err.reason
                    self._call("on_update_rejected", server_round, name, err.reason)
                    continue
                updates.append(outcome)
                self._call("on_client_fit_end", server_round, outcome)
            self._check_enough(server_round, len(instructions), updates, rejected)
            weights, aggregate_metrics = self.strategy.aggregate_train(server_round, updates)
            self.validator.check_aggregate(weights, server_round)
            self.weights = weights
            self._call("on_aggregate_end", server_round, aggregate_metrics)
            record = {
                "round": server_round,
                "train": {u.client: u.metrics for u in updates},
                "aggregate": aggregate_metrics,
            }
            if self.validates(server_round):
                per_site, mean = self.evaluate(self.weights, "val")
                record["val"] = {"sites": per_site, "mean": mean}
                if self._better(len(per_site), mean[self.selection_metric]):
                    self.best_sites = len(per_site)
                    self.best_score, self.best_round = mean[self.selection_metric], server_round
                    self.best_weights = copy.deepcopy(self.weights)
            if rejected:
                record["rejected"] = rejected
            self.history.append(record)
            self._call("on_round_end", server_round, record)
        self._call("on_test_start")
        test_last, _ = self.evaluate(self.weights, "test", surface_metrics=True)
        test_selected = (
            test_last
            if self.best_round == self.server_round
            else self.evaluate(self.best_weights, "test", surface_metrics=True)[0]
        )
        result = FitResult(
            self.best_round,
            test_selected,
            test_last,
            self.history,
            self.best_weights,
            self.weights,
        )
        self._call("on_fit_end", result)
        return result

    def _better(self, sites: int, score: float) -> bool:
        """Whether a round validated by ``sites`` sites with mean ``score`` beats the best
        so far: means over the same sites are compared, so a round that more sites
        validated (every site, unless one dropped out) wins over one that fewer did."""
        return (sites, score) > (self.best_sites, self.best_score)

    def validates(self, server_round: int) -> bool:
        """Whether ``server_round`` ends with validation: every ``eval_every`` rounds and
        always the last (the model selected on validation comes from these rounds)."""
        return server_round % self.eval_every == 0 or server_round == self.rounds

    def _check_enough(
        self, server_round: int, configured: int, updates: list, rejected: dict[str, str]
    ) -> None:
        needed = min(self.min_clients, configured)
        if len(updates) >= needed:
            return
        reasons = "; ".join(f"{name}: {reason}" for name, reason in rejected.items())
        raise FederationStopped(
            f"round {server_round}: {len(updates)} of {configured} client updates accepted, "
            f"fewer than the {needed} needed (server.min_clients={self.min_clients}). "
            f"Rejected: {reasons}"
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the current round exactly as an
        uninterrupted run would: global and selected weights, history, each client's local
        state, the strategy's and the callbacks' state, and the random generators."""
        from fedbcs_lightning.rng import global_rng_state

        clients = self.backend.state_dict()
        if self.backend.local:  # after validation, clients hold the global weights
            clients = {
                name: {**state, "weights": share_equal(state["weights"], self.weights, name)}
                for name, state in clients.items()
            }
        return {
            "round": self.server_round,
            "weights": self.weights,
            "best": {
                "score": self.best_score,
                "round": self.best_round,
                "sites": self.best_sites,
                "weights": share_equal(self.best_weights, self.weights),
            },
            "history": self.history,
            "clients": clients,
            "strategy": self.strategy.state_dict(),
            "callbacks": {state_key(cb): cb.state_dict() for cb in self.callbacks},
            "rng": global_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next :meth:`fit` continues with the next round."""
        from fedbcs_lightning.rng import restore_global_rng

        self.backend.load_state_dict(state["clients"])
        self.server_round = state["round"]
        self.weights = state["weights"]
        best = state["best"]
        self.best_score, self.best_round = best["score"], best["round"]
        self.best_sites = best.get("sites", len(self.clients))  # states of earlier versions
        self.best_weights = {k: v.clone() for k, v in best["weights"].items()}  # unshared
        self.history = list(state["history"])
        self.strategy.load_state_dict(state["strategy"])
        for callback in self.callbacks:
            saved = state["callbacks"].get(state_key(callback))
            if saved is not None:
                callback.load_state_dict(saved)
        restore_global_rng(state["rng"])


def state_key(callback: Any) -> str:
    """Where a callback's state is saved (:attr:`FederatedCallback.state_key`; the class
    name for a callback that names none)."""
    if getattr(type(callback), "state_key", None) is None:  # a duck-typed callback
        return type(callback).__name__
    key = callback.state_key
    return key if isinstance(key, str) else type(callback).__name__


def _stateful(callback: Any) -> bool:
    """Whether a callback has state of its own to save (it overrides ``state_dict``)."""
    method = getattr(type(callback), "state_dict", None)
    return method is not None and method is not FederatedCallback.state_dict


def share_equal(tensors: Weights, reference: Weights, client: str | None = None) -> Weights:
    """``tensors`` with each tensor equal to its counterpart in ``reference`` (same key, or
    ``<client>/<key>`` for a client's own layers) replaced by that counterpart, so that a
    checkpoint stores it once (``torch.save`` writes a shared tensor one time).

    >>> import torch
    >>> g = {"w": torch.ones(2)}
    >>> share_equal({"w": torch.ones(2)}, g)["w"] is g["w"]
    True
    """
    import torch

    out = {}
    for key, tensor in tensors.items():
        twin = reference.get(key)
        if twin is None and client is not None:
            twin = reference.get(site_key(client, key))
        same = (
            twin is not None
            and twin.dtype == tensor.dtype
            and twin.shape == tensor.shape
            and torch.equal(twin, tensor)
        )
        out[key] = twin if same else tensor
    return out
