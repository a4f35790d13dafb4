"""Splits: each site's train/val/test indices, seeded, grouped by patient or slide, one
split or k-fold cross-validation.

Examples
--------
>>> import numpy as np
>>> from fedbcs_lightning.data.federated import FederatedData, Site
>>> site = Site("a", np.zeros((10, 16, 16, 3), np.uint8), np.zeros((10, 16, 16), np.uint8))
>>> data = FederatedData("toy", [site], ["background", "thing"], {"thing": [1]})
>>> {k: len(v) for k, v in make_splits(data, 0.2, 0.2, seed=0)["a"].items()}
{'train': 6, 'val': 2, 'test': 2}
"""

from __future__ import annotations

import numpy as np

from fedbcs_lightning.data.federated import DataError, FederatedData, Site
from fedbcs_lightning.rng import site_seed


def make_splits(
    data: FederatedData,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int = 0,
    fold: int = 0,
) -> dict[str, dict[str, list[int]]]:
    """Per-site train/val/test indices, a deterministic function of ``seed``.

    A site's published test split (``fixed_test``) is kept and validation comes out of
    the rest; items of one group (a patient's slices, a slide's tiles) always land in
    the same split.

    With ``folds`` = k >= 2 (k-fold cross-validation), each site's groups are dealt into
    k folds of about equal image counts (seeded; published test splits are pooled with
    the rest); fold ``fold`` is the test split, so over the k folds every image is a test
    image once, and validation (``val_fraction`` of the site's groups) comes out of the
    other folds. ``test_fraction`` is not used then.

    >>> import numpy as np
    >>> site = Site("a", np.zeros((10, 4, 4, 3), np.uint8), np.zeros((10, 4, 4), np.uint8))
    >>> data = FederatedData("toy", [site], ["background", "thing"])
    >>> tests = [make_splits(data, 0.2, 0.2, 0, folds=5, fold=k)["a"]["test"] for k in range(5)]
    >>> sorted(i for test in tests for i in test) == list(range(10))
    True
    """
    splits = {}
    for site in data.sites:
        groups = site.groups or [str(i) for i in range(len(site))]
        fixed = None if folds else site.fixed_test
        held = set(fixed or [])
        pool = [i for i in range(len(site)) if i not in held]
        units = sorted({groups[i] for i in pool}) if site.groups else [groups[i] for i in pool]
        shuffle = np.random.default_rng(site_seed(seed, site.name, 2))
        order = [units[j] for j in shuffle.permutation(len(units))]
        if folds:
            test_units = _fold_units(site, order, groups, folds)[fold]
            rest = [u for u in order if u not in test_units]
        else:
            n_test = 0 if fixed else max(1, int(round(len(units) * test_fraction)))
            test_units, rest = set(order[:n_test]), order[n_test:]
        n_val = max(1, int(round(len(units) * val_fraction)))
        if len(rest) - n_val < 1 or (fixed is not None and not fixed):
            unit = "cases" if site.groups else "images"
            raise DataError(
                f"site {site.name!r} has {len(units)} {unit} to split: too few for training, "
                "validation and test; add data to the site or leave it out"
            )
        val_units = set(rest[:n_val])
        held_out = test_units | val_units
        test = sorted(fixed or [i for i in pool if groups[i] in test_units])
        splits[site.name] = {
            "train": [i for i in pool if groups[i] not in held_out],
            "val": [i for i in pool if groups[i] in val_units],
            "test": test,
        }
    return splits


def _fold_units(site: Site, order: list[str], groups: list[str], folds: int) -> list[set[str]]:
    """``order``'s groups dealt into ``folds`` folds: largest group first, each to the
    fold with the fewest images so far (ties: the shuffled order, then the first fold)."""
    if len(order) < folds:
        unit = "cases" if site.groups else "images"
        raise DataError(
            f"site {site.name!r} has {len(order)} {unit}: too few for data.folds={folds} "
            "(each fold needs one); use fewer folds or leave the site out"
        )
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    dealt: list[set[str]] = [set() for _ in range(folds)]
    counts = [0] * folds
    for unit in sorted(order, key=lambda u: -sizes[u]):  # stable: shuffled among equals
        k = counts.index(min(counts))
        dealt[k].add(unit)
        counts[k] += sizes[unit]
    return dealt


def config_splits(data: FederatedData, config) -> dict[str, dict[str, list[int]]]:
    """:func:`make_splits` as ``config`` sets it (``data.*`` fractions and folds,
    ``run.seed``): the splits of a run, on either engine and in ``fedbcs evaluate``."""
    d = config.data
    return make_splits(
        data, d.val_fraction, d.test_fraction, config.run.seed, folds=d.folds, fold=d.fold
    )
