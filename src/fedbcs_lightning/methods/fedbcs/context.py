"""Context-aware multi-level descriptors (the feature side of CDPA).

Each level's feature is fused with the deepest level of its side (the *context*) by a 1x1
convolution over ``concat(level, nearest_upsample(context))``. The convolution is linear
and nearest upsampling commutes with it, so the context half is applied at the context's
own (low) resolution and upsampled afterwards: the same numbers for far less work.

Going one step further, a :class:`Descriptor` never evaluates the convolutions densely:
it applies them to features gathered at the pixels that need them (anchors) and to
per-class feature sums, which is exact because the convolutions are linear.
:meth:`Descriptor.dense` builds the full map (for tests and comparisons).

Examples
--------
>>> import torch
>>> fusion = ContextFusion([4, 8], context_channels=16, dim=5)
>>> levels = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8)]
>>> d = fusion.describe(levels, torch.randn(1, 16, 4, 4), size=(16, 16))
>>> d.dim, tuple(d.dense().shape)
(10, (1, 10, 16, 16))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ContextFusion(nn.Module):
    """``out_i = W_i level_i + up(W_c,i context) + b_i`` for each level ``i``.

    Equals a 1x1 convolution with weight ``[W_i, W_c,i]`` over the concatenation of the
    level and the nearest-upsampled context, and is initialised as that one convolution
    would be: PyTorch's default, uniform in ``+-1/sqrt(fan_in)`` with the fan-in of the
    concatenation (``c_i + c_context``) for both halves and the bias.
    """

    def __init__(self, level_channels: Sequence[int], context_channels: int, dim: int = 256):
        super().__init__()
        self.out_dim = dim * len(level_channels)  # descriptor channels: one dim per level
        self.local = nn.ModuleList(nn.Conv2d(c, dim, 1, bias=True) for c in level_channels)
        self.context = nn.ModuleList(
            nn.Conv2d(context_channels, dim, 1, bias=False) for _ in level_channels
        )
        with torch.no_grad():
            for local, ctx, channels in zip(self.local, self.context, level_channels, strict=True):
                bound = 1.0 / math.sqrt(channels + context_channels)
                for tensor in (local.weight, local.bias, ctx.weight):
                    tensor.uniform_(-bound, bound)

    def describe(
        self, levels: Sequence[torch.Tensor], context: torch.Tensor, size: tuple[int, int]
    ) -> Descriptor:
        """The fused levels, unevaluated, as a :class:`Descriptor` at ``size``."""
        fused = []
        for local, ctx, feature in zip(self.local, self.context, levels, strict=True):
            parts = [
                LinearPart(feature, local.weight[:, :, 0, 0]),
                LinearPart(context, ctx.weight[:, :, 0, 0]),
            ]
            fused.append((parts, local.bias))
        return Descriptor(fused, size)

    def forward(self, levels: Sequence[torch.Tensor], context: torch.Tensor) -> list[torch.Tensor]:
        """The fused maps, each at its level's resolution."""
        out = []
        for local, ctx, feature in zip(self.local, self.context, levels, strict=True):
            ctx_small = ctx(context)
            out.append(local(feature) + F.interpolate(ctx_small, size=feature.shape[-2:]))
        return out


@dataclass
class LinearPart:
    """``weight @ features`` (a 1x1 convolution without bias), not yet evaluated."""

    features: torch.Tensor  # (B, c, h, w)
    weight: torch.Tensor  # (D, c)


@dataclass
class Descriptor:
    """Fused levels that stand for their nearest-resized concatenation at ``size``.

    Each fused level is ``sum(part.weight @ part.features) + bias`` with every part at its
    own resolution. The 1x1 convolutions are linear, so they are applied only where
    needed: to the features gathered at anchor pixels (:meth:`at`) and to per-class
    feature sums (:meth:`class_sums`). No ``dim``-channel map is ever built at the target
    resolution, yet the numbers equal those of the dense map (:meth:`dense`).

    Parts finer than ``size`` are nearest-resized down on construction; coarser parts stay
    at their resolution (``size`` must be an integer multiple of it).
    """

    levels: list[tuple[list[LinearPart], torch.Tensor]]  # (parts, bias) per fused level
    size: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.size
        for parts, _ in self.levels:
            for part in parts:
                ph, pw = part.features.shape[-2:]
                if ph > h or pw > w:
                    part.features = F.interpolate(part.features, size=self.size, mode="nearest")
                elif h % ph or w % pw:
                    raise ValueError(f"descriptor size {self.size} is not a multiple of {(ph, pw)}")

    @property
    def dim(self) -> int:
        return sum(bias.shape[0] for _, bias in self.levels)

    def _stride(self, part: LinearPart) -> int:
        return self.size[0] // part.features.shape[-2]

    def at(self, batch: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, dim)`` at target-resolution pixels ``(batch, y, x)``.

        Each part is evaluated where it is cheaper: gathered at the anchors and then
        projected, or (a part with fewer positions than anchors, such as the context)
        projected at its own resolution and then gathered.
        """
        rows: dict[int, torch.Tensor] = {}
        blocks = []
        for parts, bias in self.levels:
            block = bias.expand(len(batch), -1)
            for part in parts:
                features = part.features
                b, c, h, w = features.shape
                s = self._stride(part)
                if s not in rows:
                    rows[s] = (batch * h + torch.div(y, s, rounding_mode="floor")) * w + torch.div(
                        x, s, rounding_mode="floor"
                    )
                if b * h * w < len(batch):  # project first, then gather D-dim rows
                    projected = F.conv2d(features, part.weight[:, :, None, None])
                    table = projected.permute(0, 2, 3, 1).reshape(b * h * w, -1)
                    block = block + table.index_select(0, rows[s])
                else:  # gather c-dim rows, then project
                    table = features.permute(0, 2, 3, 1).reshape(b * h * w, c)
                    block = block + table.index_select(0, rows[s]) @ part.weight.T
            blocks.append(block)
        return torch.cat(blocks, dim=1)

    def class_sums(
        self, labels: torch.Tensor, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class: the sum of features over its pixels ``(C, dim)`` and the pixel count."""
        return self._class_sums(labels, num_classes, "bchw,bkhw->ck", (0, 2, 3))

    def image_class_sums(
        self, labels: torch.Tensor, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image and class: feature sums ``(B, C, dim)`` and pixel counts ``(B, C)``."""
        return self._class_sums(labels, num_classes, "bchw,bkhw->bck", (2, 3))

    def _class_sums(
        self, labels: torch.Tensor, num_classes: int, pattern: str, count_dims: tuple
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.levels[0][1].dtype
        onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(dtype)
        counts = onehot.sum(dim=count_dims)
        cell_counts: dict[int, torch.Tensor] = {}
        blocks = []
        for parts, bias in self.levels:
            block = counts[..., None] * bias
            for part in parts:
                s = self._stride(part)
                if s not in cell_counts:
                    cell_counts[s] = F.avg_pool2d(onehot, s) * (s * s) if s > 1 else onehot
                raw = torch.einsum(pattern, cell_counts[s], part.features)
                block = block + raw @ part.weight.T
            blocks.append(block)
        return torch.cat(blocks, dim=-1), counts

    def dense(self) -> torch.Tensor:
        """The materialised ``(B, dim, H, W)`` map (memory-hungry; for checks)."""
        blocks = []
        for parts, bias in self.levels:
            block = bias[None, :, None, None]
            for part in parts:
                fused = F.conv2d(part.features, part.weight[:, :, None, None])
                block = block + F.interpolate(fused, size=self.size, mode="nearest")
            blocks.append(block)
        return torch.cat(blocks, dim=1)


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

    def dims(self) -> dict[str, int]:
        """Channels of each level's descriptor (and so of its prototypes)."""
        return {side: fusion.out_dim for side, fusion in self.fusions.items()}

    def forward(self, output) -> dict[str, Descriptor]:
        out = {}
        if "encoder" in self.fusions:
            levels, context = output.encoder[:-1], output.encoder[-1]
            size = tuple(levels[0].shape[-2:])
            out["encoder"] = self.fusions["encoder"].describe(levels, context, size)
        if "decoder" in self.fusions:
            context, levels = output.decoder[0], output.decoder[1:]
            size = tuple(levels[0].shape[-2:])
            out["decoder"] = self.fusions["decoder"].describe(levels, context, size)
        return out
