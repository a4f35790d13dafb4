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
    assert [p.max() + 1 for p in parts] == [4, 2, 1]
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
