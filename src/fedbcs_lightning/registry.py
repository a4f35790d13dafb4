"""Name -> factory registries with helpful errors.

Built-in entries are registered lazily as ``"module:attribute"`` strings so that listing
names (``fedbcs datasets``, ``fedbcs --help``) never imports torch. User code registers
objects directly with the decorator form.

Examples
--------
>>> from fedbcs_lightning.registry import Registry
>>> colours = Registry("colour")
>>> @colours.register("red", description="a warm colour")
... def make_red():
...     return (255, 0, 0)
>>> colours.get("red")()
(255, 0, 0)
>>> colours.names()
['red']
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class RegistryError(KeyError):
    """An unknown name was looked up; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


#: An entry whose options are read from its object's ``Options`` attribute when asked.
_FROM_TARGET = object()


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Entry:
    target: Any  # the object itself, or "module:attribute" for a lazy entry
    description: str
    #: the options dataclass (or "module:attribute", or None: no options); by default the
    #: object's ``Options`` attribute
    options: Any = _FROM_TARGET
    #: config values this entry brings when it is chosen (a data set's image size, say),
    #: below everything the user sets
    defaults: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> Any:
        if isinstance(self.target, str):
            self.target = _load(self.target)
        return self.target

    def resolve_options(self) -> type | None:
        if self.options is _FROM_TARGET:
            self.options = getattr(self.resolve(), "Options", None)
        elif isinstance(self.options, str):
            self.options = _load(self.options)
        return self.options


class Registry:
    """A named collection of factories (backbones, data sets, methods, ...).

    With ``entry_point_group``, installed packages add entries without being imported
    first: each entry point of the group (``name = "module:attribute"`` in the package's
    metadata) is registered lazily the first time the registry is consulted.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, _Entry] = {}
        self._plugins_loaded = entry_point_group is None

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.entry_point_group):
            if point.name not in self._entries:
                self._entries[point.name] = _Entry(point.value, f"(from {point.value})")

    def register(
        self,
        name: str,
        target: Any = None,
        *,
        description: str = "",
        override: bool = False,
        options: type | None | Any = _FROM_TARGET,
        defaults: dict[str, Any] | None = None,
    ) -> Callable[[Any], Any] | Any:
        """Register ``target`` under ``name``; without ``target``, act as a decorator.

        ``options`` is the dataclass of the entry's own config options (its fields are
        the keys, their types and defaults); by default the target's ``Options`` attribute.
        ``defaults`` are config values the entry brings when a config chooses it (nested
        sections, e.g. a data set's ``{"data": {"image_size": 128}}``), below every value
        the user sets.
        """

        def add(obj: Any) -> Any:
            if name in self._entries and not override:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = description or _first_line(getattr(obj, "__doc__", None))
            self._entries[name] = _Entry(obj, doc, options, dict(defaults or {}))
            return obj

        return add if target is None else add(target)

    def register_lazy(
        self,
        name: str,
        target: str,
        description: str,
        options: str | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        """Register ``"module:attribute"``, imported on first :meth:`get`; ``options``
        names its options dataclass the same way (``None``: it has none), so reading
        a config never imports the entry itself."""
        self._entries[name] = _Entry(target, description, options, dict(defaults or {}))

    def get(self, name: str) -> Any:
        self.check(name)
        return self._entries[name].resolve()

    def check(self, name: str) -> None:
        """Raise :class:`RegistryError` naming the valid choices if ``name`` is unknown."""
        self._load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: "
                f"{', '.join(sorted(self._entries))}.{hint}"
            )

    def options(self, name: str) -> type | None:
        """The dataclass of entry ``name``'s options, or ``None`` when it has none."""
        self.check(name)
        return self._entries[name].resolve_options()

    def defaults(self, name: str) -> dict[str, Any]:
        """The config values entry ``name`` brings when chosen (``{}`` for none)."""
        self.check(name)
        return self._entries[name].defaults

    def describe(self, name: str) -> str:
        self.check(name)
        return self._entries[name].description

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def import_modules(names: list[str]) -> None:
    """Import the modules ``names`` (e.g. ones that register a backbone); an error names
    the module that cannot be imported."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # any failure of the user's module, with its reason
            raise ImportError(f"cannot import {name!r}: {type(err).__name__}: {err}") from None
