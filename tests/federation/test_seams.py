"""Both engines meet the same two protocols: an Engine prepares a federation, its
Clients are what the loop talks to."""

from importlib.util import find_spec

import pytest

from fedbcs_lightning.api import InProcess
from fedbcs_lightning.federation.engine import Clients, Engine, LocalClients
from fedbcs_lightning.testing import tiny_config


def test_the_in_process_engine_and_its_clients_meet_the_protocols():
    engine = InProcess()
    assert isinstance(engine, Engine)
    setup = engine.prepare(tiny_config("fedavg"))
    assert isinstance(LocalClients(setup.clients), Clients)


@pytest.mark.skipif(find_spec("flwr") is None, reason="Flower is not installed")
def test_the_flower_engine_and_its_clients_meet_the_protocols():
    from fedbcs_lightning.flower.server import FlowerEngine, RemoteClients

    assert isinstance(FlowerEngine(transport=None), Engine)
    for name in ("clients", "local", "fit", "evaluate", "state_dict", "load_state_dict"):
        assert hasattr(RemoteClients, name) or name in RemoteClients.__init__.__code__.co_names
    assert RemoteClients.local is False


def test_something_else_is_not_an_engine():
    assert not isinstance(object(), Engine) and not isinstance(object(), Clients)
