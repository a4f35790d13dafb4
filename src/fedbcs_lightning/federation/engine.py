"""The two seams between the federated loop and where it runs, as protocols.

An :class:`Engine` sets a federation up from a config (:class:`Setup`: the strategy, the
clients, the initial weights): ``InProcess`` (:mod:`fedbcs_lightning.api`, the default)
reads every site's data here; ``FlowerEngine`` (:mod:`fedbcs_lightning.flower.server`)
waits for sites on other machines. The :class:`Clients` it returns are what the loop
(:class:`~fedbcs_lightning.federation.trainer.FederatedTrainer`) talks to each round: it
decides what each client gets and what is done with the replies, the clients only
deliver instructions and bring back answers. :class:`LocalClients` runs every client in
this process, one after the other; ``RemoteClients`` sends the same instructions to
sites through Flower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fedbcs_lightning.federation.client import FederatedClient
from fedbcs_lightning.federation.updates import RejectedUpdate
from fedbcs_lightning.methods.base import ClientUpdate, Instruction, Strategy, Weights

if TYPE_CHECKING:
    from fedbcs_lightning.config import Config
    from fedbcs_lightning.data import FederatedData


@runtime_checkable
class Clients(Protocol):
    """The clients of a federation, wherever they run."""

    #: ``{name: client}`` in a fixed order (the order updates are aggregated in)
    clients: Mapping[str, Any]
    #: whether the clients' data are in this process (plots of predictions need it)
    local: bool

    def fit(
        self, instructions: dict[str, Instruction], started: Callable[[str], None]
    ) -> Iterator[tuple[str, ClientUpdate | RejectedUpdate]]:
        """``(name, ClientUpdate | RejectedUpdate)`` per instructed client, in
        ``instructions`` order, calling ``started(name)`` when a client begins."""
        ...

    def evaluate(
        self,
        instructions: dict[str, Instruction],
        split: str,
        surface_metrics: bool,
        done: Callable[[str], None],
    ) -> dict[str, dict[str, float]]:
        """``{name: metrics}`` of the clients that answered, calling ``done(name)`` after
        each."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What the server must keep to resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Setup:
    """A federation ready to train: what :meth:`Engine.prepare` returns before anything
    is written to the run directory."""

    strategy: Strategy
    clients: list[FederatedClient] | Clients  # a list runs in this process (LocalClients)
    initial_weights: Weights
    data_info: dict
    splits: dict
    data: FederatedData | None = None  # None when the sites' data stay on their machines


@runtime_checkable
class Engine(Protocol):
    """How a federation is set up: passed to :func:`fedbcs_lightning.api.fit` and
    :func:`~fedbcs_lightning.api.resume` as ``engine``."""

    def prepare(self, config: Config) -> Setup:
        """Build the strategy and the clients for ``config`` (reading data where the
        clients are local), checking what can fail before the run directory is written."""
        ...


class LocalClients:
    """Every client in this process; each trains in turn.

    Examples
    --------
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
