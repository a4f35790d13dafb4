"""The backbone contract every segmentation network implements.

FedBCS and the prototype baselines need more than logits: the multi-level encoder
features (shallow to deep), the decoder features (deep to shallow), and a place to insert
a module after an encoder level whose output replaces that level's feature. A backbone
provides exactly that and nothing else; the contract tests of
:mod:`fedbcs_lightning.testing` check every registered backbone (a plugin's too).

Examples
--------
>>> import torch
>>> from fedbcs_lightning.models import create_backbone
>>> net = create_backbone("unet", in_channels=3, num_classes=2, width=4)
>>> out = net.forward_features(torch.zeros(1, 3, 32, 32))
>>> [f.shape[1] for f in out.encoder], [f.shape[1] for f in out.decoder]
([4, 8, 16, 32], [32, 16, 8, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from fedbcs_lightning.config import ModelConfig


@dataclass
class BackboneOutput:
    """What one forward pass exposes."""

    logits: torch.Tensor
    encoder: list[torch.Tensor]  # shallow -> deep, the skip levels (bottleneck excluded)
    decoder: list[torch.Tensor]  # deep -> shallow
    bottleneck: torch.Tensor


class _EncoderTransform:
    """Forward hook on an encoder level's module: its output replaced by the transform a
    method set for that level (held by the backbone's ``encoder_transforms``, so that a
    deep copy of the backbone hooks the copy's transforms)."""

    def __init__(self, transforms: nn.ModuleDict, level: int) -> None:
        self.transforms, self.level = transforms, level

    def __call__(self, module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        key = str(self.level)
        return self.transforms[key](output) if key in self.transforms else output


class SegmentationBackbone(nn.Module):
    """Base class of every backbone: subclasses implement :meth:`forward_levels` and
    :meth:`encoder_level_modules`, and set the channel/stride attributes.

    :meth:`forward_features` (what everything calls) checks the input, applies the
    method's input transform (HarmoFL's amplitude normalisation) and calls
    :meth:`forward_levels`; a method's encoder transform (FedBCS's style recalibration)
    replaces the output of the module :meth:`encoder_level_modules` names for its level,
    so it feeds the next level and the skip connection. A subclass cannot skip either:
    defining ``forward_features`` or ``forward`` itself is an error.

    A backbone with options declares them as a dataclass in ``Options``; the config's
    ``model.options`` section is read into it and passed to the constructor as keyword
    arguments (with ``in_channels`` and ``num_classes``).
    """

    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    encoder_strides: tuple[int, ...]
    decoder_strides: tuple[int, ...]
    bottleneck_channels: int
    #: input height and width must be multiples of this (``data.image_size`` is checked)
    input_divisor: int = 16
    #: the dataclass of the backbone's own options (``model.options``), or None
    Options: type | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("forward_features", "forward"):
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__} defines {name}(); a backbone implements "
                    "forward_levels(x) (and encoder_level_modules()), and the base class's "
                    "forward_features checks the input and applies the method's transforms"
                )

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder_transforms = nn.ModuleDict()
        self.input_transform: nn.Module | None = None
        self._hooked_levels: set[int] = set()

    @classmethod
    def from_config(cls, config: ModelConfig, in_channels: int, num_classes: int):
        """Build from the ``model`` config section: the backbone's options
        (``config.options``) as keyword arguments. Override to read other keys."""
        return cls(in_channels=in_channels, num_classes=num_classes, **config.options)

    def forward_levels(self, x: torch.Tensor) -> BackboneOutput:
        """The network itself, on a checked and transformed input: logits and every
        level's features."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement forward_levels")

    def encoder_level_modules(self) -> list[nn.Module] | None:
        """The modules whose outputs are the encoder levels (shallow first, one per entry
        of ``encoder_channels``), each output feeding both the next level and the skip
        connection; ``None`` where they cannot be named (encoder transforms then fail
        with the reason)."""
        return None

    def forward_features(self, x: torch.Tensor) -> BackboneOutput:
        self.check_input(x)
        return self.forward_levels(self.apply_input_transform(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def set_encoder_transform(self, level: int, module: nn.Module) -> None:
        """Insert ``module`` after encoder level ``level`` (0-based, shallow first)."""
        if not 0 <= level < len(self.encoder_channels):
            raise ValueError(
                f"encoder level {level} does not exist; this backbone has levels "
                f"0..{len(self.encoder_channels) - 1}"
            )
        modules = self.encoder_level_modules()
        if modules is None:
            raise NotImplementedError(
                f"{type(self).__qualname__} does not name its encoder level modules "
                "(encoder_level_modules()), so no method can insert a layer after a level"
            )
        if len(modules) != len(self.encoder_channels):
            raise ValueError(
                f"{type(self).__qualname__}.encoder_level_modules() names {len(modules)} "
                f"modules for {len(self.encoder_channels)} encoder levels"
            )
        self.encoder_transforms[str(level)] = module
        if level not in self._hooked_levels:
            modules[level].register_forward_hook(_EncoderTransform(self.encoder_transforms, level))
            self._hooked_levels.add(level)

    def set_input_transform(self, module: nn.Module) -> None:
        """Insert ``module`` before the first layer (e.g. HarmoFL's amplitude normalisation)."""
        self.input_transform = module

    def apply_input_transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_transform is None else self.input_transform(x)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        d = self.input_divisor
        if h % d or w % d:
            raise ValueError(
                f"input size {h}x{w} is not a multiple of {d}; resize or pad to "
                f"{-(-h // d) * d}x{-(-w // d) * d}"
            )
