"""The federated loop: rounds of configure -> local fit -> aggregate -> validate.

The loop knows nothing about any method; strategies and callbacks plug in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.client import FederatedClient
from fedbcs_lightning.strategies.base import Strategy, Weights


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

    The model selected for the final report is the round with the best mean validation
    Dice over sites; the last round is reported beside it. Test data is used only at the
    end.

    Example
    -------
    See :func:`fedbcs_lightning.api.fit`.
    """

    def __init__(
        self,
        clients: list[FederatedClient],
        strategy: Strategy,
        rounds: int,
        callbacks: list[FederatedCallback] | None = None,
        selection_metric: str = "dice",
    ) -> None:
        if not clients:
            raise ValueError("a federation needs at least one client")
        self.clients = {c.name: c for c in clients}
        self.strategy = strategy
        self.rounds = rounds
        self.callbacks = list(callbacks or [])
        self.selection_metric = selection_metric
        self.server_round = 0
        self.history: list[dict[str, Any]] = []

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def evaluate(self, weights: Weights, split: str, surface_metrics: bool = False):
        names = list(self.clients)
        instructions = self.strategy.configure_evaluate(self.server_round, weights, names)
        per_site = {
            name: self.clients[name].evaluate(instructions[name], split, surface_metrics)
            for name in names
        }
        return per_site, self.strategy.aggregate_evaluate(self.server_round, per_site)

    def fit(self, weights: Weights) -> FitResult:
        names = list(self.clients)
        best_score, best_round, best_weights = -float("inf"), 0, copy.deepcopy(weights)
        self._call("on_fit_start")
        for server_round in range(1, self.rounds + 1):
            self.server_round = server_round
            self._call("on_round_start", server_round)
            instructions = self.strategy.configure_train(server_round, weights, names)
            updates = []
            for name in names:
                self._call("on_client_fit_start", server_round, name)
                update = self.clients[name].fit(instructions[name])
                updates.append(update)
                self._call("on_client_fit_end", server_round, update)
            weights, aggregate_metrics = self.strategy.aggregate_train(server_round, updates)
            self._call("on_aggregate_end", server_round, aggregate_metrics)
            per_site, mean = self.evaluate(weights, "val")
            record = {
                "round": server_round,
                "train": {u.client: u.metrics for u in updates},
                "aggregate": aggregate_metrics,
                "val": {"sites": per_site, "mean": mean},
            }
            self.history.append(record)
            if mean[self.selection_metric] > best_score:
                best_score, best_round = mean[self.selection_metric], server_round
                best_weights = copy.deepcopy(weights)
            self._call("on_round_end", server_round, record)
        test_last, _ = self.evaluate(weights, "test", surface_metrics=True)
        test_selected = (
            test_last
            if best_round == self.rounds
            else self.evaluate(best_weights, "test", surface_metrics=True)[0]
        )
        result = FitResult(
            best_round, test_selected, test_last, self.history, best_weights, weights
        )
        self._call("on_fit_end", result)
        return result
