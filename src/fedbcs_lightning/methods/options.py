"""The options of the built-in methods: one dataclass per method, its config section.

Each method declares its options when it registers (``options=`` or the strategy's
``Options`` attribute); the config reads the section named after the method into that
dataclass and calls its ``validate()``. Plugins use the same mechanism. This module
imports no torch, so reading a config stays cheap.

Examples
--------
>>> from fedbcs_lightning.config import resolve
>>> resolve(overrides=["train.method=fedprox", "fedprox.mu=0.1"]).fedprox
FedProxOptions(mu=0.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedbcs_lightning.config.checks import choice, non_negative, positive, within
from fedbcs_lightning.config.schema import ConfigError


@dataclass
class FedBCSOptions:
    """Options of method ``fedbcs``; the ablations are switches here."""

    fsr: bool = True  # frequency-domain style recalibration in the encoder
    fsr_levels: list[int] = field(default_factory=lambda: [2, 3, 4])  # 1-based encoder levels
    fsr_mode: str = "closed"  # closed (exact fast path) | fft | band
    fsr_bands: int = 4  # radial bands, for fsr_mode band
    cdpa: bool = False  # context-aware dual-level prototype alignment (on in the paper presets)
    prototype_levels: list[str] = field(default_factory=lambda: ["encoder", "decoder"])
    prototype_dim: int = 256  # channels of each fused level
    prototype_mean: str = "batch"  # batch (mean of batch means, the reference) | pixel
    clustering: str = "finch"  # finch | mean (server-side prototype aggregation)
    max_anchors: int = 1024  # anchors per class, level and batch (random subset); 0 = all
    tau: float = 0.1  # temperature of the contrastive term
    weight: float = 1.0  # lambda, weight of the alignment loss
    warmup_rounds: int = 0  # lambda rises linearly over this many rounds from round 2; 0 = none
    alignment: str = "stable"  # stable (log-sum-exp) | paper (the reference's clamps)

    def validate(self) -> None:
        choice(self, "fsr_mode", ("closed", "fft", "band"))
        choice(self, "prototype_mean", ("batch", "pixel"))
        choice(self, "clustering", ("finch", "mean"))
        choice(self, "alignment", ("stable", "paper"))
        choice(self, "prototype_levels", ("encoder", "decoder"))
        if self.cdpa and not self.prototype_levels:
            raise ConfigError("prototype_levels: name encoder and/or decoder (or cdpa: false)")
        if any(level < 1 for level in self.fsr_levels):
            raise ConfigError(f"fsr_levels: levels count from 1, got {self.fsr_levels}")
        positive(self, "tau", "prototype_dim", "fsr_bands")
        non_negative(self, "max_anchors", note="0 = all")
        non_negative(self, "weight")
        non_negative(self, "warmup_rounds", note="0 = none")


@dataclass
class FedProxOptions:
    """Options of method ``fedprox``."""

    mu: float = 0.01  # weight of the proximal term

    def validate(self) -> None:
        non_negative(self, "mu")


@dataclass
class MoonOptions:
    """Options of method ``moon``."""

    mu: float = 1.0  # weight of the model-contrastive loss
    tau: float = 0.5  # temperature
    projection_dim: int = 64  # output size of the projection head on the pooled bottleneck

    def validate(self) -> None:
        positive(self, "tau", "projection_dim")
        non_negative(self, "mu")


@dataclass
class FPLOptions:
    """Options of method ``fpl`` (prototypes of the last decoder layer)."""

    tau: float = 0.02  # temperature of the cluster-prototype contrastive term
    weight: float = 1.0  # weight of the prototype loss (contrastive + consistency)
    max_anchors: int = 1024  # anchors per class and batch (random subset); 0 = all

    def validate(self) -> None:
        positive(self, "tau")
        non_negative(self, "weight", "max_anchors")


@dataclass
class HarmoFLOptions:
    """Options of method ``harmofl``."""

    alpha: float = 0.05  # radius of the weight perturbation (gradient direction)
    momentum: float = 0.1  # update rate of each site's running amplitude spectrum

    def validate(self) -> None:
        non_negative(self, "alpha")
        within(self, "momentum", 0.0, 1.0, closed="high")
