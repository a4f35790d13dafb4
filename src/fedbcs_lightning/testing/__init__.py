"""Contract tests for plugin authors: subclass them in your own test suite.

A backbone plugin subclasses :class:`BackboneContract` and names its backbone (and
options); a method plugin subclasses :class:`MethodContract` and names its method. The
project's own backbones and methods are tested by the same classes. Running these needs
pytest (the ``test`` extra).

Example (a plugin's ``tests/test_contract.py``)::

    import my_plugin  # registers "my-net" and "median"
    from fedbcs_lightning.testing import BackboneContract, MethodContract

    class TestMyNet(BackboneContract):
        backbone = "my-net"
        options = {"depth": 3}

    class TestMedian(MethodContract):
        method = "median"
"""

from __future__ import annotations

from fedbcs_lightning.testing.backbones import BackboneContract
from fedbcs_lightning.testing.methods import MethodContract, tiny_config

__all__ = ["BackboneContract", "MethodContract", "tiny_config"]
