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
