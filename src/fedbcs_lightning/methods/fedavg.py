"""FedAvg (McMahan et al., 2017)."""

from __future__ import annotations

from collections.abc import Callable

from fedbcs_lightning.methods.base import (
    ClientUpdate,
    Strategy,
    Weights,
    robust_average,
    weighted_average,
)


class FedAvg(Strategy):
    """Average every tensor of the clients' state dicts, weighted by training-set size.

    Examples
    --------
    >>> import torch
    >>> from fedbcs_lightning.methods.base import ClientUpdate
    >>> a = ClientUpdate("a", {"w": torch.tensor([0.0])}, num_examples=1)
    >>> b = ClientUpdate("b", {"w": torch.tensor([4.0])}, num_examples=3)
    >>> FedAvg().aggregate_train(1, [a, b])[0]["w"]
    tensor([3.])
    """

    name = "fedavg"

    def __init__(self, weight_of: Callable[[ClientUpdate], float] | None = None) -> None:
        self.weight_of = weight_of or (lambda u: float(u.num_examples))

    def average(self, updates: list[ClientUpdate], keys: list[str] | None = None) -> Weights:
        """The updates' tensors (under ``keys``; all by default) combined by the configured
        rule: the example-weighted mean, or a robust coordinate-wise median / trimmed mean."""
        if self.aggregation == "mean":
            return weighted_average(updates, self.weight_of, keys)
        return robust_average(updates, self.aggregation, self.trim_fraction, keys)

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        return self.average(updates), {}
