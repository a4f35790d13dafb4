import pytest

from fedbcs_lightning.catalog import BACKBONES, DATASETS, METHODS
from fedbcs_lightning.registry import Registry, RegistryError


def test_unknown_name_lists_valid_names_and_suggests():
    reg = Registry("widget")
    reg.register("alpha", object(), description="a")
    reg.register("beta", object(), description="b")
    with pytest.raises(RegistryError) as err:
        reg.get("alpah")
    message = str(err.value)
    assert "alpha, beta" in message and "Did you mean 'alpha'" in message


def test_decorator_registration_and_duplicate_refused():
    reg = Registry("widget")

    @reg.register("thing")
    class Thing:
        """Makes things."""

    assert reg.get("thing") is Thing
    assert reg.describe("thing") == "Makes things."
    with pytest.raises(ValueError, match="already registered"):
        reg.register("thing", object())


def test_lazy_entry_resolves_on_get():
    reg = Registry("function")
    reg.register_lazy("join", "os.path:join", "joins paths")
    assert "join" in reg and reg.describe("join") == "joins paths"
    import os.path

    assert reg.get("join") is os.path.join


def test_builtin_catalog_entries_all_resolve():
    for registry in (BACKBONES, DATASETS, METHODS):
        for name in registry.names():
            assert callable(registry.get(name)), name
