import numpy as np
import pytest

from fedbcs_lightning.methods.clustering import finch_cluster, finch_partitions


def _on_circle(degrees):
    radians = np.deg2rad(degrees)
    return (
        np.stack([np.cos(radians), np.sin(radians)], 1) * np.linspace(1, 3, len(degrees))[:, None]
    )


def test_hierarchy_of_four_groups_in_two_super_groups():
    points = _on_circle([0, 1, 2, 10, 11, 12, 90, 91, 92, 100, 101, 102])
    parts = finch_partitions(points)
    assert [p.max() + 1 for p in parts] == [4, 2]
    assert parts[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert finch_cluster(points).tolist() == [0] * 6 + [1] * 6  # coarsest with > 1 cluster


def test_cosine_distance_ignores_magnitude():
    points = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [1.0, 100.0]])
    assert finch_cluster(points).tolist() == [0, 0, 1, 1]


def test_three_points_collapse_to_one_cluster_and_that_partition_is_used():
    points = _on_circle([0, 40, 170])
    assert finch_cluster(points).tolist() == [0, 0, 0]


def test_single_point_and_empty():
    assert finch_cluster(np.ones((1, 4))).tolist() == [0]
    with pytest.raises(ValueError, match="zero points"):
        finch_partitions(np.zeros((0, 3)))


def test_matches_a_plain_first_neighbour_implementation_on_random_sets():
    """FINCH's definition, written out, gives the partition the package gives."""

    def first_neighbour_partitions(points):
        labels = np.arange(len(points))
        parts = []
        while True:
            means = np.stack([points[labels == c].mean(0) for c in range(labels.max() + 1)])
            if len(means) == 1:
                return parts
            m = means / np.linalg.norm(means, axis=1, keepdims=True)
            distance = 1 - m @ m.T
            np.fill_diagonal(distance, np.inf)
            nn = distance.argmin(1)
            parent = list(range(len(means)))

            def find(i, parent=parent):
                while parent[i] != i:
                    i = parent[i]
                return i

            for i, j in enumerate(nn):
                parent[find(i)] = find(int(j))
            roots = {r: k for k, r in enumerate(dict.fromkeys(find(i) for i in range(len(means))))}
            merged = np.array([roots[find(i)] for i in range(len(means))])
            if merged.max() + 1 == len(means):
                return parts
            labels = merged[labels]
            parts.append(labels)

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, d = int(rng.integers(2, 12)), int(rng.choice([2, 16]))
        points = rng.normal(size=(3, d))[rng.integers(0, 3, n)] + rng.normal(scale=0.5, size=(n, d))
        multi = [p for p in first_neighbour_partitions(points) if p.max() > 0]
        expected = multi[-1] if multi else np.zeros(n, int)
        got = finch_cluster(points)
        relabel = {}
        assert [relabel.setdefault(g, e) for g, e in zip(got, expected, strict=True)] == list(
            expected
        )
        assert len(set(got)) == len(set(expected))
