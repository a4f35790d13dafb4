"""Class prototypes: what FedBCS clients upload and the server sends back.

A :class:`PrototypeBank` maps ``(level, class)`` to a stack of vectors: one per client-side
prototype, or the server's cluster centroids. :class:`PrototypeAccumulator` builds a
client's bank from per-batch class sums; :func:`aggregate_prototypes` is the server side.

Examples
--------
>>> import torch
>>> a = PrototypeBank({("encoder", 1): torch.tensor([[1.0, 0.0]])})
>>> b = PrototypeBank({("encoder", 1): torch.tensor([[0.0, 1.0]])})
>>> merged, clusters = aggregate_prototypes([a, b], clustering="mean")
>>> merged.unbiased("encoder", 1)
tensor([0.5000, 0.5000])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedbcs_lightning.methods.clustering import finch_cluster


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(B, H, W)`` label maps."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@dataclass
class PrototypeBank:
    """``(level, class) -> (m, D)`` vectors."""

    vectors: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)

    def levels(self) -> list[str]:
        return sorted({level for level, _ in self.vectors})

    def classes(self, level: str) -> list[int]:
        return sorted(c for lvl, c in self.vectors if lvl == level)

    def centroids(self, level: str, cls: int) -> torch.Tensor:
        return self.vectors[(level, cls)]

    def unbiased(self, level: str, cls: int) -> torch.Tensor:
        """The plain mean of a class's centroids."""
        return self.vectors[(level, cls)].mean(dim=0)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Plain ``{"level/class": tensor}`` for transport and checkpoints."""
        return {f"{level}/{cls}": v for (level, cls), v in self.vectors.items()}

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor]) -> PrototypeBank:
        vectors = {}
        for key, value in data.items():
            level, _, c = key.rpartition("/")
            vectors[(level, int(c))] = value
        return cls(vectors)


class PrototypeAccumulator:
    """Collects class means per level over batches.

    ``mode="batch"``: the mean of per-batch class means (the reference);
    ``mode="pixel"``: total feature sum over total pixel count.
    """

    def __init__(self, mode: str = "batch") -> None:
        if mode not in ("batch", "pixel"):
            raise ValueError(f"prototype mean must be 'batch' or 'pixel', got {mode!r}")
        self.mode = mode
        self._sums: dict[tuple[str, int], torch.Tensor] = {}
        self._counts: dict[tuple[str, int], float] = {}

    @torch.no_grad()
    def add(self, level: str, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """``sums (C, D)`` and ``counts (C,)`` of one batch; absent classes are skipped."""
        for cls in torch.nonzero(counts > 0).flatten().tolist():
            key = (level, cls)
            if self.mode == "batch":
                value, weight = sums[cls] / counts[cls], 1.0
            else:
                value, weight = sums[cls], float(counts[cls])
            value = value.detach().double().cpu()
            self._sums[key] = self._sums.get(key, 0) + value
            self._counts[key] = self._counts.get(key, 0.0) + weight

    def bank(self) -> PrototypeBank:
        return PrototypeBank(
            {k: (self._sums[k] / self._counts[k]).float()[None] for k in sorted(self._sums)}
        )


def aggregate_prototypes(
    banks: list[PrototypeBank], clustering: str = "finch"
) -> tuple[PrototypeBank, dict[str, int]]:
    """Server side: per ``(level, class)``, cluster the clients' prototypes.

    ``clustering="finch"``: FINCH under cosine distance, coarsest partition with more than
    one cluster; centroids are plain means of members. ``"mean"``: one centroid, the mean.
    A class seen by one client keeps that client's prototype. Returns the global bank and
    the number of clusters per ``"level/class"``.
    """
    if clustering not in ("finch", "mean"):
        raise ValueError(f"prototype clustering must be 'finch' or 'mean', got {clustering!r}")
    keys = sorted({key for bank in banks for key in bank.vectors})
    out, counts = {}, {}
    for key in keys:
        stack = torch.cat([bank.vectors[key] for bank in banks if key in bank.vectors])
        if clustering == "mean" or len(stack) == 1:
            labels = np.zeros(len(stack), dtype=int)
        else:
            labels = finch_cluster(stack.double().numpy())
        centroids = torch.stack(
            [stack[torch.from_numpy(labels == c)].mean(0) for c in range(labels.max() + 1)]
        )
        out[key] = centroids
        counts[f"{key[0]}/{key[1]}"] = int(labels.max() + 1)
    return PrototypeBank(out), counts
