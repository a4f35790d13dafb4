"""Reading configurations: presets and YAML files, ``key=value`` overrides, typed merging.

Examples
--------
>>> from fedbcs_lightning.config.parsing import parse_override
>>> parse_override("train.rounds=5")
{'train': {'rounds': 5}}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fedbcs_lightning.config.schema import Config, ConfigError
from fedbcs_lightning.config.validation import validate


def merge(config: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``config`` with nested ``updates`` applied and typed.

    At the top level of a :class:`Config`, a section named after a registered method is
    read into the options dataclass that method declares.
    """
    if updates is None and prefix:  # an empty YAML section
        return config
    if not isinstance(updates, dict):
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the config"
        raise ConfigError(f"{where}: expected a mapping of keys, got {updates!r}")
    hints = typing.get_type_hints(type(config))
    top = isinstance(config, Config)
    if top:
        hints.pop("methods")
    changes: dict[str, Any] = {}
    sections = dict(config.methods) if top else {}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if top and key not in hints:
            sections[key] = _merge_method_section(config, key, value, hints, updates)
            continue
        if key not in hints:
            raise _unknown_key(key, prefix, list(hints))
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, prefix=f"{path}.")
        elif typing.get_origin(hints[key]) is dict:  # a component's own options, bound later
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of keys, got {value!r}")
            changes[key] = {**current, **(value or {})}
        else:
            changes[key] = _coerce(value, hints[key], path)
    if top:
        changes["methods"] = sections
    return dataclasses.replace(config, **changes)


def _unknown_key(key: Any, prefix: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    path = f"{prefix}{key}"
    return ConfigError(f"unknown config key {path!r}; valid keys here: {', '.join(valid)}.{hint}")


def _merge_method_section(
    config: Config, key: Any, value: Any, hints: dict, updates: dict[str, Any]
) -> Any:
    """Section ``key`` of the config's top level: the options of the method of that name."""
    from fedbcs_lightning.catalog import METHODS
    from fedbcs_lightning.config.validation import imports_hint

    if key not in METHODS:  # the valid keys: the sections, then the methods' options
        error = _unknown_key(key, "", [*hints, *(m for m in METHODS.names() if _has_options(m))])
        run = updates.get("run")
        recorded = run.get("imports") if isinstance(run, dict) else None
        modules = recorded if isinstance(recorded, list) else config.run.imports
        raise ConfigError(f"{error}{imports_hint(modules, 'method', str(key))}")
    options = METHODS.options(key)
    if options is None:
        raise ConfigError(f"{key}: method {key!r} declares no options; drop this section")
    current = config.methods.get(key) or options()
    return merge(current, value, prefix=f"{key}.")


def _has_options(method: str) -> bool:
    from fedbcs_lightning.catalog import METHODS

    try:
        return METHODS.options(method) is not None
    except Exception:  # a plugin that cannot be imported is reported where it is used
        return False


def bind_backbone_options(config: Config) -> Config:
    """``model.options`` read into the options dataclass of the backbone ``model.backbone``
    (typed, with its defaults filled in, validated); kept as a plain mapping so that a
    saved config reads back without the backbone's code."""
    from fedbcs_lightning.catalog import BACKBONES

    raw = config.model.options
    options = BACKBONES.options(config.model.backbone)
    if options is None:
        if raw:
            raise ConfigError(
                f"model.options: backbone {config.model.backbone!r} declares no options, "
                f"got {', '.join(map(str, raw))}"
            )
        return config
    typed = merge(options(), raw, prefix="model.options.")
    check_options(typed, "model.options")
    model = dataclasses.replace(config.model, options=dataclasses.asdict(typed))
    return dataclasses.replace(config, model=model)


def check_options(options: Any, section: str) -> None:
    """Run an options dataclass's own ``validate()``, naming ``section`` in its errors."""
    check = getattr(options, "validate", None)
    if check is None:
        return
    try:
        check()
    except ConfigError as err:
        raise ConfigError(f"{section}.{err}") from None


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").strip("[]").split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {hint}")  # pragma: no cover


def parse_override(text: str) -> dict[str, Any]:
    """``"train.rounds=5"`` -> ``{"train": {"rounds": "5"}}`` (typed later by :func:`merge`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    parsed = yaml.safe_load(value) if value else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return nested


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files("fedbcs_lightning.presets").iterdir()
        if p.name.endswith(".yaml")
    )


def load_yaml(source: str | Path) -> dict[str, Any]:
    """Read a preset by name (``configs/<name>.yaml``) or a YAML file by path."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        preset = resources.files("fedbcs_lightning.presets") / f"{source}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"config {str(source)!r} is neither a file nor a preset; presets: "
                f"{', '.join(preset_names())}"
            )
        text = preset.read_text()
        where = f"preset {source!r}"
    else:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        where = str(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as err:
        raise ConfigError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections at the top level")
    return data


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently, so a repeated section would hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(
                    f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); "
                    "give each key once"
                )
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def resolve(
    preset: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- the chosen data set's defaults <- preset/YAML file <- ``key=value``
    overrides <- explicit options; validated.

    Each layer is typed and checked as it is applied, so a later layer cannot hide a bad
    value in an earlier one (``--set train.rounds=abc --rounds 1`` is an error). The data
    set's defaults (``fedbcs config --dataset fundus`` shows them) lie under every layer:
    the data set is known once all layers are read, then they are applied again on top.
    """
    layers = [load_yaml(preset) if preset else {}, *map(parse_override, overrides), options or {}]
    config = Config()
    for layer in layers:
        config = merge(config, layer)
    defaults = _dataset_defaults(config.data.name)
    if defaults:
        config = merge(Config(), defaults)
        for layer in layers:
            config = merge(config, layer)
    return finish(config)


def _dataset_defaults(name: str) -> dict[str, Any]:
    from fedbcs_lightning.catalog import DATASETS

    return DATASETS.defaults(name) if name in DATASETS else {}


def finish(config: Config) -> Config:
    """The last step of reading a config: names checked, the chosen method's section
    present (with its defaults), every component's options typed and validated."""
    validate(config)
    method = config.train.method
    if method not in config.methods:
        defaults = config.method_options(method)
        if defaults is not None:
            config = dataclasses.replace(config, methods={**config.methods, method: defaults})
    for name, options in config.methods.items():
        check_options(options, name)
    return bind_backbone_options(config)


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a saved (resolved) config."""
    return finish(merge(Config(), data))


def save(config: Config, path: str | Path) -> None:
    from fedbcs_lightning.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
