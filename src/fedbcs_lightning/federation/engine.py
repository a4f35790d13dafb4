"""Where the clients run: the one seam between the federated loop and its engines.

The loop (:class:`~fedbcs_lightning.federation.trainer.FederatedTrainer`) decides what each
client gets and what is done with the replies; an engine only delivers instructions and
brings back what the clients answered. :class:`LocalClients` runs every client in this
process, one after the other (the default); the Flower engine
(:mod:`fedbcs_lightning.flower`) sends the same instructions to sites on other machines.

An engine has:

- ``clients``: ``{name: client}`` in a fixed order (the order updates are aggregated in);
- ``local``: whether the clients' data are in this process (plots of predictions need it);
- ``fit(instructions, started)``: yields ``(name, ClientUpdate | RejectedUpdate)`` per
  instructed client, in ``instructions`` order, calling ``started(name)`` when a client
  begins;
- ``evaluate(instructions, split, surface_metrics, done)``: ``{name: metrics}`` of the
  clients that answered, calling ``done(name)`` after each;
- ``state_dict()`` / ``load_state_dict(state)``: what the server must keep to resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fedbcs_lightning.federation.client import FederatedClient
from fedbcs_lightning.federation.updates import RejectedUpdate
from fedbcs_lightning.methods.base import ClientUpdate, Instruction


class LocalClients:
    """Every client in this process; each trains in turn.

    Example
    -------
    See :func:`fedbcs_lightning.api.fit`, which builds one over a config's sites.
    """

    local = True

    def __init__(self, clients: list[FederatedClient]) -> None:
        if not clients:
            raise ValueError("a federation needs at least one client")
        self.clients = {c.name: c for c in clients}

    def fit(
        self, instructions: dict[str, Instruction], started: Callable[[str], None]
    ) -> Iterator[tuple[str, ClientUpdate | RejectedUpdate]]:
        for name, instruction in instructions.items():
            started(name)
            try:
                yield name, self.clients[name].fit(instruction)
            except RejectedUpdate as err:
                yield name, err

    def evaluate(
        self,
        instructions: dict[str, Instruction],
        split: str,
        surface_metrics: bool,
        done: Callable[[str], None],
    ) -> dict[str, dict[str, float]]:
        per_site = {}
        for name, instruction in instructions.items():
            per_site[name] = self.clients[name].evaluate(instruction, split, surface_metrics)
            done(name)
        return per_site

    def state_dict(self) -> dict[str, Any]:
        """Each client's local state (optimiser, local layers, method state, loader RNG)."""
        return {name: client.state_dict() for name, client in self.clients.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.clients) - set(state))
        if missing:
            raise ValueError(f"the checkpoint has no state for clients {missing}")
        for name, client in self.clients.items():
            client.load_state_dict(state[name])
