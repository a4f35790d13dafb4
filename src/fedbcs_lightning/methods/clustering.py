"""FINCH: first-neighbour clustering (Sarfraz et al., CVPR 2019), under cosine distance.

The clustering is the authors' own package (``finch-clust``), as the reference code of
FedBCS uses it. FINCH links each point to its first neighbour, takes connected components
as a partition and repeats on the cluster means, giving a hierarchy of partitions from fine
to coarse; FedBCS takes the coarsest one that still has more than one cluster.

Examples
--------
>>> import numpy as np
>>> points = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]])
>>> finch_partitions(points)[0].tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import warnings

import numpy as np


def finch_partitions(points: np.ndarray) -> list[np.ndarray]:
    """The FINCH partitions of ``points`` ``(N, D)``, finest first, as label arrays (the
    package leaves out the final single cluster unless it is the first partition)."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        raise ValueError("cannot cluster zero points")
    if len(points) == 1:
        return [np.zeros(1, dtype=int)]
    with warnings.catch_warnings():  # it warns that its optional ANN backend is absent
        warnings.simplefilter("ignore")
        from finch import FINCH

        partitions, _, _ = FINCH(points, distance="cosine", ensure_early_exit=False)
    return [np.asarray(partitions[:, j], dtype=int) for j in range(partitions.shape[1])]


def finch_cluster(points: np.ndarray) -> np.ndarray:
    """The coarsest partition with more than one cluster (or the first, if that already
    has a single cluster) — the FedBCS rule."""
    partitions = finch_partitions(points)
    multi = [p for p in partitions if p.max() > 0]
    return multi[-1] if multi else partitions[0]
