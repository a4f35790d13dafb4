"""Random-number generator states, captured and restored so a resumed run continues the
very same random streams: the global generators (Python, NumPy, torch) and the ones a
client's training loader owns (its shuffling sampler and its augmentation pipeline).

States are stored as plain Python values and tensors, so checkpoints load with
``torch.load(..., weights_only=True)``.

Examples
--------
>>> import random
>>> state = global_rng_state()
>>> a = random.random()
>>> restore_global_rng(state)
>>> a == random.random()
True
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """NumPy arrays and tuples as lists, recursively (``weights_only``-safe)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _python_state(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss


def _numpy_state(state: dict) -> dict:
    state = dict(state)
    inner = dict(state["state"])
    if "key" in inner:  # MT19937
        inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
    state["state"] = inner
    return state


def global_rng_state() -> dict[str, Any]:
    import torch

    state = {
        "python": _plain(random.getstate()),
        "numpy": _plain(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    import torch

    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _random_objects(transform: Any) -> list[Any]:
    """Every object of an albumentations pipeline that owns generators, depth first."""
    if transform is None:
        return []
    found = [transform] if hasattr(transform, "random_generator") else []
    for child in getattr(transform, "transforms", []) or []:
        found += _random_objects(child)
    return found


def _datasets(dataset: Any) -> list[Any]:
    return list(getattr(dataset, "datasets", [dataset]))  # a ConcatDataset has several


def loader_rng_state(loader: Any) -> dict[str, Any]:
    """The sampler generator and the augmentation generators of a training loader."""
    augmentation = []
    for dataset in _datasets(loader.dataset):
        for obj in _random_objects(getattr(dataset, "transform", None)):
            augmentation.append(
                {
                    "numpy": _plain(obj.random_generator.bit_generator.state),
                    "python": _plain(obj.py_random.getstate()),
                }
            )
    generator = loader.generator
    return {
        "sampler": generator.get_state() if generator is not None else None,
        "augmentation": augmentation,
    }


def restore_loader_rng(loader: Any, state: dict[str, Any]) -> None:
    objects = [
        obj
        for dataset in _datasets(loader.dataset)
        for obj in _random_objects(getattr(dataset, "transform", None))
    ]
    if len(objects) != len(state["augmentation"]):
        raise ValueError(
            f"the checkpoint holds {len(state['augmentation'])} augmentation generators, "
            f"the loader has {len(objects)}; the augmentation settings changed"
        )
    for obj, saved in zip(objects, state["augmentation"], strict=True):
        bit_state = dict(saved["numpy"])
        obj.random_generator.bit_generator.state = bit_state
        obj.py_random.setstate(_python_state(saved["python"]))
    if state["sampler"] is not None and loader.generator is not None:
        loader.generator.set_state(state["sampler"])


def site_seed(seed: int, site: str, *more: int) -> int:
    """A seed for one site's random streams, from the run's ``seed`` and the site's name.

    It depends on nothing else (not on the other sites, nor on the site's position in a
    list), so a site draws the same splits, shuffles and augmentations whether it trains
    in-process beside the others or alone on its own machine.

    >>> site_seed(0, "kumar") == site_seed(0, "kumar") != site_seed(0, "tnbc")
    True
    """
    key = [seed, zlib.crc32(site.encode("utf-8")), *more]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with the global generators (Python, NumPy, torch) seeded by ``seed``,
    then put back the states they had: what the body draws depends on ``seed`` only."""
    import torch

    saved = global_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        restore_global_rng(saved)
