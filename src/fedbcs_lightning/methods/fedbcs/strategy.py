"""FedBCS: FedAvg + frequency-domain style recalibration + dual-level prototype alignment.

Server: weighted averaging of all weights (FSR and fusion layers included) composed with
prototype aggregation (FINCH per level and class). Client: the alignment loss against the
global prototypes (from round 2 on) and, during the last local epoch, the local class
prototypes to upload. CDPA (the prototype half) is off unless ``fedbcs.cdpa`` is set: it
did worse than FSR alone on validation (README, "Choosing the default").
"""

from __future__ import annotations

from typing import Any

import torch

from fedbcs_lightning.config import ConfigError
from fedbcs_lightning.methods.base import (
    ClientHook,
    ClientUpdate,
    Instruction,
    Weights,
)
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.methods.fedbcs.alignment import alignment_loss
from fedbcs_lightning.methods.fedbcs.context import DualLevelDescriptors
from fedbcs_lightning.methods.fedbcs.fsr import build_fsr
from fedbcs_lightning.methods.options import FedBCSOptions
from fedbcs_lightning.methods.prototypes import (
    PrototypeAccumulator,
    PrototypeBank,
    aggregate_prototypes,
    resize_labels,
)

DESCRIPTORS = "prototype_descriptors"


def sample_anchors(labels: torch.Tensor, max_per_class: int = 0):
    """Foreground pixels ``(batch, y, x)``; with ``max_per_class``, a uniform random subset
    of at most that many per class (an unbiased estimate of the per-class mean loss)."""
    b, y, x = torch.nonzero(labels != 0, as_tuple=True)
    if max_per_class <= 0 or len(b) == 0:  # no foreground: no anchors
        return b, y, x
    classes = labels[b, y, x]
    keep = []
    for cls in classes.unique():
        members = torch.nonzero(classes == cls).flatten()
        if len(members) > max_per_class:
            members = members[torch.randperm(len(members), device=members.device)[:max_per_class]]
        keep.append(members)
    keep = torch.cat(keep).sort().values
    return b[keep], y[keep], x[keep]


def alignment_weight(weight: float, warmup_rounds: int, server_round: int) -> float:
    """Lambda in ``server_round``: alignment starts in round 2 (the first with global
    prototypes) and, with a warm-up, rises linearly to ``weight`` over ``warmup_rounds``.

    Examples
    --------
    >>> [alignment_weight(1.0, 4, r) for r in (1, 2, 3, 5, 9)]
    [0.0, 0.25, 0.5, 1.0, 1.0]
    >>> alignment_weight(0.5, 0, 2)
    0.5
    """
    if server_round < 2:
        return 0.0
    if warmup_rounds <= 0:
        return weight
    return weight * min(1.0, (server_round - 1) / warmup_rounds)


class PrototypeAlignment(ClientHook):
    """Client side of CDPA: alignment loss and local prototypes."""

    def __init__(self, options: FedBCSOptions, local_epochs: int, collect: bool = True) -> None:
        self.options = options
        self.local_epochs = local_epochs
        self.collect = collect  # reduce this site's prototypes from its training steps
        self.global_bank: PrototypeBank | None = None
        self.accumulator = PrototypeAccumulator(options.prototype_mean)
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.weight = options.weight  # lambda of the current round

    def on_fit_start(self, module: Any, instruction: Instruction) -> None:
        bank = instruction.config.get("prototypes")
        self.global_bank = PrototypeBank.from_dict(bank) if bank else None
        self.weight = alignment_weight(
            self.options.weight, self.options.warmup_rounds, instruction.server_round
        )
        self.accumulator = PrototypeAccumulator(self.options.prototype_mean)

    def extra_losses(self, module: Any, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        _, masks = batch
        last_epoch = self.collect and module.current_epoch == self.local_epochs - 1
        if self.global_bank is None and not last_epoch:
            return {}
        descriptors = getattr(module.backbone, DESCRIPTORS)(output)
        # This step's prototypes, reduced now: the descriptors read the fusion weights,
        # which the optimiser changes after this call (the reference reduces before too).
        self._pending = self._class_sums(descriptors, masks, module) if last_epoch else None
        if self.global_bank is None:
            return {}
        losses = {}
        share = self.weight / len(descriptors)
        for level, descriptor in descriptors.items():
            labels = resize_labels(masks, descriptor.size)
            b, y, x = sample_anchors(labels, self.options.max_anchors)
            loss = alignment_loss(
                descriptor.at(b, y, x),
                labels[b, y, x],
                self.global_bank,
                level,
                self.options.tau,
                self.options.alignment,
            )
            losses[f"align/{level}"] = share * loss
        return losses

    @staticmethod
    @torch.no_grad()
    def _class_sums(descriptors: dict, masks: torch.Tensor, module: Any) -> dict:
        sums = {}
        for level, descriptor in descriptors.items():
            labels = resize_labels(masks, descriptor.size)
            sums[level] = descriptor.class_sums(labels, module.backbone.num_classes)
        return sums

    def on_train_batch_end(self, module: Any, batch: Any, output: Any, epoch: int) -> None:
        # Added once per step (an optimiser that evaluates the loss twice overwrites
        # ``_pending``; the step's last evaluation counts).
        if self._pending is None:
            return
        for level, (sums, counts) in self._pending.items():
            self.accumulator.add(level, sums, counts)
        self._pending = None

    def on_fit_end(self, module: Any) -> dict[str, Any]:
        return {"prototypes": self.accumulator.bank().to_dict()} if self.collect else {}


class PrototypeExchange(FedAvg):
    """FedAvg whose sites also upload class prototypes and align to the server's
    clusters of them (FedBCS's CDPA, FPL): the prototype half shared by both.

    Subclasses attach their descriptor module (what turns a forward pass into per-level
    pixel descriptors) in :meth:`configure_backbone` with :meth:`attach_descriptors`.
    Generic layers see the :class:`~fedbcs_lightning.methods.base.PrototypeSharing`
    protocol: :meth:`shares_prototypes` and :meth:`prototype_descriptors`.
    """

    def __init__(self, options: FedBCSOptions, local_epochs: int = 1) -> None:
        super().__init__()
        self.options = options
        self.local_epochs = local_epochs
        self.global_prototypes: PrototypeBank | None = None
        #: descriptor width per prototype level and the class count, known once a backbone
        #: is configured; uploads are checked against them
        self.prototype_shape: tuple[dict[str, int], int] | None = None
        #: whether clients reduce prototypes from their training steps; with
        #: ``privacy.mode=sample`` a private release replaces them (privacy/hooks.py)
        self.collect_prototypes = True

    def shares_prototypes(self) -> bool:
        return bool(self.options.cdpa)

    def prototype_descriptors(self, backbone: Any) -> Any:
        """The module of ``backbone`` that maps a forward pass to per-level descriptors."""
        return getattr(backbone, DESCRIPTORS)

    def attach_descriptors(self, backbone: Any, descriptors: Any, dims: dict[str, int]) -> None:
        backbone.add_module(DESCRIPTORS, descriptors)
        self.prototype_shape = (dims, backbone.num_classes)

    def check_payload(self, update: ClientUpdate) -> None:
        """An upload holds ``{"prototypes": {"<level>/<class>": (1, D) tensor}}``: known
        levels, classes of the model, the level's descriptor width, finite values."""
        if not self.shares_prototypes():
            return super().check_payload(update)
        if set(update.payload) != {"prototypes"} or not isinstance(
            update.payload["prototypes"], dict
        ):
            raise ValueError(
                f"payload must be {{'prototypes': {{...}}}}, got {sorted(update.payload)}"
            )
        dims, num_classes = self.prototype_shape or (None, None)
        for key, vectors in update.payload["prototypes"].items():
            level, _, cls = str(key).rpartition("/")
            if dims is not None and (
                level not in dims or not cls.isdigit() or int(cls) >= num_classes
            ):
                raise ValueError(f"prototype {key!r}: no such level/class in this model")
            if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
                raise ValueError(f"prototype {key!r}: not a floating-point tensor")
            width = dims[level] if dims is not None else vectors.shape[-1]
            if vectors.dim() != 2 or vectors.shape != (1, width):
                raise ValueError(
                    f"prototype {key!r}: shape {tuple(vectors.shape)}, expected (1, {width})"
                )
            if not torch.isfinite(vectors).all():
                raise ValueError(f"prototype {key!r}: non-finite values")

    def client_hooks(self) -> list[ClientHook]:
        if not self.shares_prototypes():
            return []
        return [PrototypeAlignment(self.options, self.local_epochs, self.collect_prototypes)]

    def privacy_refusal(self, mode: str) -> str | None:
        if mode == "client" and self.shares_prototypes():
            return (
                "uploads prototypes that the server clusters site by site, which noise on an "
                "average cannot cover; use privacy.mode=sample (noised prototypes)"
            )
        return None

    def configure_train(
        self, server_round: int, weights: Weights, clients: list[str]
    ) -> dict[str, Instruction]:
        instructions = super().configure_train(server_round, weights, clients)
        bank = self.global_prototypes.to_dict() if self.global_prototypes else None
        for instruction in instructions.values():
            instruction.config["prototypes"] = bank
        return instructions

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        weights = self.average(updates)
        metrics: dict[str, float] = {}
        if self.shares_prototypes():
            banks = [PrototypeBank.from_dict(u.payload["prototypes"]) for u in updates]
            self.global_prototypes, clusters = aggregate_prototypes(banks, self.options.clustering)
            metrics.update({f"clusters/{key}": n for key, n in clusters.items()})
        return weights, metrics

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": self.global_prototypes.to_dict() if self.global_prototypes else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bank = state.get("prototypes")
        self.global_prototypes = PrototypeBank.from_dict(bank) if bank else None


class FedBCS(PrototypeExchange):
    """FedBCS strategy; ``options`` switch its parts on and off (ablations).

    Examples
    --------
    >>> from fedbcs_lightning.methods.options import FedBCSOptions
    >>> from fedbcs_lightning.models.unet import UNet
    >>> strategy = FedBCS(FedBCSOptions(cdpa=True, prototype_dim=8))
    >>> net = strategy.configure_backbone(UNet(3, 2, width=4))
    >>> sorted(net.encoder_transforms)
    ['1', '2', '3']
    """

    name = "fedbcs"
    Options = FedBCSOptions

    def __init__(self, options: FedBCSOptions | None = None, local_epochs: int = 1) -> None:
        super().__init__(options or FedBCSOptions(), local_epochs)

    @classmethod
    def from_config(cls, config) -> FedBCS:
        strategy = cls(config.method_options(), config.train.local_epochs)
        strategy.collect_prototypes = config.privacy.mode != "sample"
        return strategy

    def configure_backbone(self, backbone: Any) -> Any:
        opts = self.options
        if opts.fsr:
            for level in opts.fsr_levels:
                if level > len(backbone.encoder_channels):
                    raise ConfigError(
                        f"fedbcs.fsr_levels: level {level} does not exist; the backbone has "
                        f"{len(backbone.encoder_channels)} encoder levels"
                    )
                channels = backbone.encoder_channels[level - 1]
                backbone.set_encoder_transform(
                    level - 1, build_fsr(channels, opts.fsr_mode, opts.fsr_bands)
                )
        if opts.cdpa:
            descriptors = DualLevelDescriptors(backbone, opts.prototype_dim, opts.prototype_levels)
            self.attach_descriptors(backbone, descriptors, descriptors.dims())
        return backbone

    def aggregate_train(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Weights, dict[str, float]]:
        weights, metrics = super().aggregate_train(server_round, updates)
        metrics.update(fsr_mixing_weights(weights))
        return weights, metrics


def fsr_mixing_weights(weights: Weights, temperature: float = 0.1) -> dict[str, float]:
    """``fsr/level<k>/normalised``: the share of the instance-normalised amplitude per FSR
    layer (mean over bands for the band variant)."""
    out = {}
    for key, logits in weights.items():
        if key.startswith("encoder_transforms.") and key.endswith(".mix_logits"):
            level = int(key.split(".")[1]) + 1
            lam = torch.softmax(logits.float() / temperature, dim=-1)
            out[f"fsr/level{level}/normalised"] = float(lam[..., 0].mean())
    return out
