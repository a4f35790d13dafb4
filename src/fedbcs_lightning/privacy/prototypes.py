"""Private class prototypes: a bounded, noised mean of per-image class means.

Without noise a prototype is an exact statistic of the site's images (with one image of
a class, it *is* that image's mean feature; :func:`release_prototypes` with no noise
shows it). Here each image contributes once: its class-mean feature at each level,
scaled down to at most ``clip`` in L2 norm, and a count of one per class it shows. Over
all ``L`` levels and ``C`` classes one image moves the sums by at most
``clip * sqrt(L * C)`` and the counts by at most ``sqrt(L * C)``; Gaussian noise of
``noise_multiplier`` times these bounds is added to both, and the released prototype is
noisy sum over noisy count. The pair is one Gaussian mechanism with noise multiplier
``noise_multiplier / sqrt(2)`` over the whole training set (sample rate 1), which the
site's accountant composes with its DP-SGD steps.
"""

from __future__ import annotations

import math

import torch

from fedbcs_lightning.methods.prototypes import PrototypeBank, resize_labels


def clip_rows(vectors: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale each vector of the last dimension to an L2 norm of at most ``bound``."""
    norms = vectors.norm(dim=-1, keepdim=True)
    return vectors * (bound / norms.clamp(min=1e-12)).clamp(max=1.0)


def effective_noise_multiplier(noise_multiplier: float) -> float:
    """Sums and counts each noised with ``noise_multiplier``: one Gaussian mechanism."""
    return noise_multiplier / math.sqrt(2.0)


@torch.no_grad()
def release_prototypes(
    backbone: torch.nn.Module,
    describe,
    dataset,
    *,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator | None,
    batch_size: int = 8,
) -> PrototypeBank:
    """Per level and class, the (noised) mean over the images of ``dataset`` of their
    clipped class-mean features ``describe(backbone.forward_features(x))`` gives.

    ``noise_multiplier=0`` releases the exact clipped means (no privacy). A class whose
    noisy count is below one is left out.
    """
    from torch.utils.data import DataLoader

    device = next(backbone.parameters()).device
    num_classes = backbone.num_classes
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    was_training = backbone.training
    backbone.eval()
    try:
        for images, masks in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            descriptors = describe(backbone.forward_features(images.to(device)))
            for level, descriptor in descriptors.items():
                labels = resize_labels(masks.to(device), descriptor.size)
                image_sums, image_counts = descriptor.image_class_sums(labels, num_classes)
                present = image_counts > 0
                means = image_sums / image_counts.clamp(min=1)[..., None]
                means = clip_rows(means, clip) * present[..., None]
                sums[level] = sums.get(level, 0) + means.sum(0).double().cpu()
                counts[level] = counts.get(level, 0) + present.sum(0).double().cpu()
    finally:
        backbone.train(was_training)
    blocks = math.sqrt(len(sums) * num_classes)
    vectors = {}
    for level in sorted(sums):
        total, count = sums[level], counts[level]
        if noise_multiplier > 0:
            std = noise_multiplier * blocks
            total = total + std * clip * _normal(total.shape, generator)
            count = count + std * _normal(count.shape, generator)
        for cls in range(num_classes):
            if float(count[cls]) >= 1.0:
                vectors[(level, cls)] = (total[cls] / count[cls]).float()[None]
    return PrototypeBank(vectors)


def _normal(shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)
