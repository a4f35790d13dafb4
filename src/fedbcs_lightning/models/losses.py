"""Segmentation loss of FedBCS: (cross-entropy + soft Dice) / 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5
) -> torch.Tensor:
    """1 - mean over classes (background included) of soft Dice on softmax probabilities,
    with sums over the whole batch."""
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(CE + soft Dice) / 2``.

    Examples
    --------
    >>> import torch
    >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> perfect = torch.zeros(1, 2, 4, 4); perfect[:, 0] = 20.0
    >>> float(segmentation_loss(perfect, target)) < 1e-3
    True
    """
    return (F.cross_entropy(logits, target) + soft_dice_loss(logits, target)) / 2
