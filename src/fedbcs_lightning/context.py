"""Context-aware multi-level descriptors (the feature side of CDPA).

Each level's feature is fused with the deepest level of its side (the *context*) by a 1x1
convolution over ``concat(level, nearest_upsample(context))``. The convolution is linear
and nearest upsampling commutes with it, so the context half is applied at the context's
own (low) resolution and upsampled afterwards: the same numbers for far less work.

A :class:`Descriptor` keeps the fused maps at their own resolutions and behaves as their
nearest-resized concatenation at a target size, without materialising it: per-pixel
features are gathered where they are needed (anchors), and class sums are computed with
per-cell pixel counts. :meth:`Descriptor.dense` builds the full map (for tests).

Example
-------
>>> import torch
>>> fusion = ContextFusion([4, 8], context_channels=16, dim=5)
>>> maps = fusion([torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8)], torch.randn(1, 16, 4, 4))
>>> d = Descriptor(maps, (16, 16))
>>> d.dim, tuple(d.dense().shape)
(10, (1, 10, 16, 16))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ContextFusion(nn.Module):
    """``out_i = W_i level_i + up(W_c,i context) + b_i`` for each level ``i``.

    Equals a 1x1 convolution with weight ``[W_i, W_c,i]`` over the concatenation of the
    level and the nearest-upsampled context.
    """

    def __init__(self, level_channels: Sequence[int], context_channels: int, dim: int = 256):
        super().__init__()
        self.local = nn.ModuleList(nn.Conv2d(c, dim, 1, bias=True) for c in level_channels)
        self.context = nn.ModuleList(
            nn.Conv2d(context_channels, dim, 1, bias=False) for _ in level_channels
        )

    def forward(self, levels: Sequence[torch.Tensor], context: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for local, ctx, feature in zip(self.local, self.context, levels, strict=True):
            ctx_small = ctx(context)
            out.append(local(feature) + F.interpolate(ctx_small, size=feature.shape[-2:]))
        return out


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(B, H, W)`` label maps."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@dataclass
class Descriptor:
    """Fused maps that stand for their nearest-resized concatenation at ``size``.

    Maps finer than ``size`` are resized down on construction; coarser maps stay at their
    resolution (``size`` must be an integer multiple of it).
    """

    maps: list[torch.Tensor]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.size
        resized = []
        for m in self.maps:
            mh, mw = m.shape[-2:]
            if mh > h or mw > w:
                m = F.interpolate(m, size=self.size, mode="nearest")
            elif h % m.shape[-2] or w % m.shape[-1]:
                raise ValueError(f"descriptor size {self.size} is not a multiple of {(mh, mw)}")
            resized.append(m)
        self.maps = resized

    @property
    def dim(self) -> int:
        return sum(m.shape[1] for m in self.maps)

    def _strides(self) -> list[int]:
        return [self.size[0] // m.shape[-2] for m in self.maps]

    def at(self, batch: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, dim)`` at target-resolution pixels ``(batch, y, x)``."""
        parts = []
        for m, s in zip(self.maps, self._strides(), strict=True):
            parts.append(
                m[
                    batch,
                    :,
                    torch.div(y, s, rounding_mode="floor"),
                    torch.div(x, s, rounding_mode="floor"),
                ]
            )
        return torch.cat(parts, dim=1)

    def class_sums(
        self, labels: torch.Tensor, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class: the sum of features over its pixels ``(C, dim)`` and the pixel count."""
        onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(self.maps[0].dtype)
        sums = []
        for m, s in zip(self.maps, self._strides(), strict=True):
            counts = F.avg_pool2d(onehot, s) * (s * s) if s > 1 else onehot
            sums.append(torch.einsum("bchw,bdhw->cd", counts, m))
        return torch.cat(sums, dim=1), onehot.sum(dim=(0, 2, 3))

    def dense(self) -> torch.Tensor:
        """The materialised ``(B, dim, H, W)`` map (memory-hungry; for checks)."""
        return torch.cat([F.interpolate(m, size=self.size, mode="nearest") for m in self.maps], 1)


class DualLevelDescriptors(nn.Module):
    """Encoder and decoder descriptors of FedBCS for a backbone's levels.

    Encoder: context = deepest encoder level, fused with each shallower one, at the
    finest level's resolution. Decoder: context = deepest decoder level, fused with each
    later one, at the coarsest of those (d3, H/4, for the reference U-Net).
    """

    def __init__(self, backbone, dim: int = 256, sides: Sequence[str] = ("encoder", "decoder")):
        super().__init__()
        unknown = set(sides) - {"encoder", "decoder"}
        if unknown or not sides:
            raise ValueError(f"prototype levels must be encoder and/or decoder, got {list(sides)}")
        self.sides = list(sides)
        self.fusions = nn.ModuleDict()
        if "encoder" in sides:
            ch = backbone.encoder_channels
            self.fusions["encoder"] = ContextFusion(ch[:-1], ch[-1], dim)
        if "decoder" in sides:
            ch = backbone.decoder_channels
            self.fusions["decoder"] = ContextFusion(ch[1:], ch[0], dim)

    def forward(self, output) -> dict[str, Descriptor]:
        out = {}
        if "encoder" in self.fusions:
            levels, context = output.encoder[:-1], output.encoder[-1]
            maps = self.fusions["encoder"](levels, context)
            out["encoder"] = Descriptor(maps, tuple(levels[0].shape[-2:]))
        if "decoder" in self.fusions:
            context, levels = output.decoder[0], output.decoder[1:]
            maps = self.fusions["decoder"](levels, context)
            out["decoder"] = Descriptor(maps, tuple(levels[0].shape[-2:]))
        return out
