"""FedAvg (McMahan et al., 2017)."""

from __future__ import annotations

from collections.abc import Callable

from fedbcs_lightning.methods.base import ClientUpdate, Strategy, Weights, weighted_average


class FedAvg(Strategy):
    """Average every tensor of the clients' state dicts, weighted by training-set size.

    Example
    -------
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

    @classmethod
    def from_config(cls, config) -> FedAvg:
        return cls()

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        return weighted_average(updates, self.weight_of), {}
