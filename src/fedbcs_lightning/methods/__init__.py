"""Federated methods (the `--method` word): server-side strategies, their client hooks,
and the prototype machinery FedBCS and FPL share.

The names below load on first use, so that :mod:`.options` (what a config reads) never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedbcs_lightning.catalog import METHODS

_LAZY = {
    "ClientHook": "fedbcs_lightning.methods.base",
    "ClientUpdate": "fedbcs_lightning.methods.base",
    "Instruction": "fedbcs_lightning.methods.base",
    "PrototypeSharing": "fedbcs_lightning.methods.base",
    "Strategy": "fedbcs_lightning.methods.base",
    "Weights": "fedbcs_lightning.methods.base",
    "robust_average": "fedbcs_lightning.methods.base",
    "weighted_average": "fedbcs_lightning.methods.base",
    "site_key": "fedbcs_lightning.methods.base",
    "create_strategy": "fedbcs_lightning.methods.create",
    "strategy_class": "fedbcs_lightning.methods.create",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", *sorted(_LAZY)]
