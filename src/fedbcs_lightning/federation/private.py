"""DP-SGD at a site: per-image gradients, clipped and noised by Opacus's ``DPOptimizer``.

:class:`PrivateSegmentationModule` computes each image's gradient with its own backward
pass (a microbatch of one). That is exact for any layer and any loss a method adds
(FedBCS's alignment on fused features, MOON's contrast, FedProx's proximal term), which
Opacus's per-layer gradient samplers are not: FedBCS applies its fusion weights outside
the layers' forward calls. Clipping, noise and the mean over the expected batch size are
Opacus's (the optimiser is wrapped by :class:`~fedbcs_lightning.privacy.hooks.SamplePrivacy`).
Batches are Poisson samples (:func:`fedbcs_lightning.privacy.dpsgd.poisson_loader`), and
BatchNorm, whose output mixes the images of a batch, is replaced by GroupNorm
(:func:`fedbcs_lightning.models.backbone_from_config`).
"""

from __future__ import annotations

import torch

from fedbcs_lightning.federation.client import SegmentationClientModule


class PrivateSegmentationModule(SegmentationClientModule):
    """A client module trained with DP-SGD: the optimiser (wrapped in Opacus's
    ``DPOptimizer`` by :class:`~fedbcs_lightning.privacy.hooks.SamplePrivacy`) clips
    each image's gradient and adds Gaussian noise to their sum.

    Each image's loss is the segmentation loss plus the method's terms on that image
    alone; the logged losses are their means over the batch.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx: int) -> None:
        images, masks = batch
        optimizer = self.optimizers()
        params = optimizer.optimizer.params
        per_image = [
            torch.zeros((len(images), *p.shape), dtype=p.dtype, device=p.device) for p in params
        ]
        sums: dict[str, float] = {}
        for i in range(len(images)):
            total, values, _ = self.step_loss((images[i : i + 1], masks[i : i + 1]))
            grads = torch.autograd.grad(total, params, allow_unused=True)
            for store, grad in zip(per_image, grads, strict=True):
                if grad is not None:
                    store[i] = grad
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
        for param, grad_sample in zip(params, per_image, strict=True):
            param.grad_sample = grad_sample
        optimizer.step()
        optimizer.zero_grad()
        for key, value in sums.items():
            self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value / len(images)
        self.steps += 1
        self._last_output = (batch, None)
