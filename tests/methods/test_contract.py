"""Every built-in method passes the contract of :mod:`fedbcs_lightning.testing`: one
subclass of :class:`MethodContract` per method, as a plugin's own tests write it."""

from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.testing import MethodContract

OPTIONS = {"fedbcs": {"cdpa": True, "prototype_dim": 8}}

for _name in METHODS.names():
    _title = "".join(part.capitalize() for part in _name.split("-"))
    globals()[f"Test{_title}"] = type(
        f"Test{_title}", (MethodContract,), {"method": _name, "options": OPTIONS.get(_name, {})}
    )


def test_a_from_config_that_builds_no_strategy_is_refused_by_name():
    import pytest

    from fedbcs_lightning.config import ConfigError
    from fedbcs_lightning.methods import Strategy, create_strategy
    from fedbcs_lightning.testing import tiny_config

    class Confused(Strategy):
        @classmethod
        def from_config(cls, config):
            return object()

    METHODS.register("confused", Confused)
    try:
        with pytest.raises(ConfigError, match="Confused.from_config returned object"):
            create_strategy(tiny_config("confused"))
    finally:
        METHODS._entries.pop("confused")
