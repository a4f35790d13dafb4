"""FINCH: first-neighbour clustering (Sarfraz et al., CVPR 2019), under cosine distance.

Each point is linked to its first neighbour; connected components (links in either
direction, or a shared first neighbour) form a partition. The procedure repeats on the
cluster means of the original points until one cluster remains or nothing merges,
yielding a hierarchy of partitions from fine to coarse.

Example
-------
>>> import numpy as np
>>> points = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]])
>>> finch_partitions(points)[0].tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


def _first_neighbours(points: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    unit = points / np.clip(norms, 1e-12, None)
    distance = 1.0 - unit @ unit.T
    np.fill_diagonal(distance, np.inf)
    return distance.argmin(axis=1)


def _link(points: np.ndarray) -> np.ndarray:
    n = len(points)
    neighbour = _first_neighbours(points)
    rows = np.concatenate([np.arange(n), neighbour])
    cols = np.concatenate([neighbour, np.arange(n)])
    # i ~ j if j = nn(i), i = nn(j), or nn(i) = nn(j): the last follows through nn(i).
    graph = csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def finch_partitions(points: np.ndarray) -> list[np.ndarray]:
    """All FINCH partitions of ``points`` ``(N, D)``, finest first, as label arrays."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n == 0:
        raise ValueError("cannot cluster zero points")
    if n == 1:
        return [np.zeros(1, dtype=int)]
    labels = _link(points)
    partitions = [labels]
    while labels.max() > 0:
        k = labels.max() + 1
        means = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
        merged = _link(means)
        if merged.max() + 1 == k:
            break
        labels = merged[labels]
        partitions.append(labels)
    return partitions


def finch_cluster(points: np.ndarray) -> np.ndarray:
    """The coarsest partition with more than one cluster (or the first, if that already
    has a single cluster) — the FedBCS rule."""
    partitions = finch_partitions(points)
    multi = [p for p in partitions if p.max() > 0]
    return multi[-1] if multi else partitions[0]
