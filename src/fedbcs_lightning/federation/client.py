"""A client: a LightningModule around a backbone, plus the state it keeps between rounds.

:class:`SegmentationClientModule` is the Lightning side (training step, loss, optimiser).
:class:`FederatedClient` is the seam a federated loop (in-process or Flower) talks to:
``fit(instruction) -> ClientUpdate`` and ``evaluate(instruction, split) -> metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import warnings
from typing import Any

import lightning as L
import torch

from fedbcs_lightning.config import ConfigError
from fedbcs_lightning.evaluation.metrics import WHOLE_IMAGE_PIXELS, evaluate
from fedbcs_lightning.federation.updates import RejectedUpdate
from fedbcs_lightning.methods.base import ClientHook, ClientUpdate, Instruction
from fedbcs_lightning.models.base import SegmentationBackbone
from fedbcs_lightning.models.losses import segmentation_loss
from fedbcs_lightning.rng import loader_rng_state, restore_loader_rng, seeded, site_seed

#: Lightning's messages that a federated round makes noise: one short epoch per site
#: and round on purpose, data read in the training process by default.
_LIGHTNING_NOISE = (
    r".*does not have many workers.*",
    r".*The number of training batches.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


@contextlib.contextmanager
def quiet_lightning():
    """While a client trains: Lightning's info logs (devices, model summary) and the
    warnings of :data:`_LIGHTNING_NOISE` are held back; the process's logging levels
    and warning filters are as they were afterwards."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in _LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


class NonFiniteLoss(ArithmeticError):
    """A training step's loss is NaN or infinite (training diverged)."""

    def __init__(self, step: int, losses: dict[str, float]) -> None:
        terms = ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "total")
        super().__init__(f"step {step}: loss {losses['total']} ({terms})")
        self.step, self.losses = step, losses


class SegmentationClientModule(L.LightningModule):
    """Training step = ``(CE + Dice) / 2`` plus whatever the method's hooks add.

    Override :meth:`compute_loss` for another segmentation loss, or
    :meth:`configure_optimizers` for another optimiser. ``channels_last`` trains in NHWC
    memory layout, ``compile`` through ``torch.compile`` (both for GPUs; the numbers are
    those of the plain model up to float rounding).

    Examples
    --------
    >>> from fedbcs_lightning.models.unet import UNet
    >>> module = SegmentationClientModule(UNet(3, 2, width=4), optimizer="sgd", lr=0.01)
    >>> type(module.configure_optimizers()).__name__
    'SGD'
    """

    def __init__(
        self,
        backbone: SegmentationBackbone,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.0,
        hooks: list[ClientHook] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last
        self.compile_features = compile
        self._features: Any = None  # the (compiled) forward_features of training steps
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.hooks = list(hooks or [])
        self.optimizer_state: dict[str, Any] | None = None
        self.loss_sums: dict[str, float] = {}
        self.steps = 0
        self._recorded_step: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def compute_loss(self, output, target: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(output.logits, target)

    def step_loss(self, batch) -> tuple[torch.Tensor, dict[str, float], Any]:
        """The loss of ``batch`` (segmentation plus the hooks' terms), each term's value,
        and the backbone's output; :class:`NonFiniteLoss` if the total is not finite."""
        images, masks = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        output = self.features(images)
        losses = {"seg": self.compute_loss(output, masks)}
        for hook in self.hooks:
            losses.update(hook.extra_losses(self, batch, output))
        total = sum(losses.values())
        losses["total"] = total
        values = {key: float(value.detach()) for key, value in losses.items()}
        if not math.isfinite(values["total"]):
            raise NonFiniteLoss(self.steps + 1, values)
        return total, values, output

    @property
    def features(self):
        """The backbone's ``forward_features`` as training steps call it: compiled once with
        ``torch.compile`` where ``compile`` is set."""
        if not self.compile_features:
            return self.backbone.forward_features
        if self._features is None:
            self._features = torch.compile(self.backbone.forward_features)
        return self._features

    def on_fit_start(self) -> None:
        if self.channels_last:  # NHWC: faster convolutions on recent GPUs (tensor cores)
            self.backbone.to(memory_format=torch.channels_last)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        total, values, output = self.step_loss(batch)
        step = (self.current_epoch, batch_idx)
        if step != self._recorded_step:  # an optimiser may evaluate a batch twice
            self._recorded_step = step
            for key, value in values.items():
                self.loss_sums[key] = self.loss_sums.get(key, 0.0) + value
            self.steps += 1
        self._last_output = (batch, output)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        batch, output = self._last_output
        for hook in self.hooks:
            hook.on_train_batch_end(self, batch, output, self.current_epoch)
        del self._last_output

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self.build_optimizer()
        for hook in self.hooks:
            optimizer = hook.configure_optimizer(self, optimizer)
        return optimizer

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The plain optimiser named by ``optimizer`` (hooks may wrap it)."""
        params = self.parameters()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"unknown optimizer {self.optimizer_name!r}; use adam, adamw or sgd")

    def on_train_start(self) -> None:
        # Each client keeps its optimiser (e.g. Adam moments) across rounds.
        if self.optimizer_state is not None:
            self.trainer.optimizers[0].load_state_dict(self.optimizer_state)

    def on_train_end(self) -> None:
        self.optimizer_state = self.trainer.optimizers[0].state_dict()


def evaluation_device(accelerator: str) -> torch.device:
    """Where a client scores images: the GPU that ``run.accelerator`` trains on (as
    Lightning picks it: CUDA first, then Apple's MPS, for ``auto``), else the CPU."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class FederatedClient:
    """One site: its module, its loaders and the local state that outlives a round.

    Examples
    --------
    See :func:`fedbcs_lightning.api.fit`, which builds one per site.
    """

    def __init__(
        self,
        name: str,
        module: SegmentationClientModule,
        loaders: dict[str, Any],
        num_train_examples: int,
        regions: dict[str, list[int]],
        local_epochs: int = 1,
        accelerator: str = "cpu",
        window: int | None = None,
        whole_image_pixels: int = WHOLE_IMAGE_PIXELS,
        largest_component: bool = False,
        seed: int = 0,
        precision: str = "32",
    ) -> None:
        self.name = name
        self.module = module
        self.loaders = loaders
        self.num_train_examples = num_train_examples
        self.regions = regions
        self.local_epochs = local_epochs
        self.accelerator = accelerator
        self.window = window
        self.whole_image_pixels = whole_image_pixels
        self.largest_component = largest_component
        self.seed = seed
        self.precision = precision
        self._trainer: L.Trainer | None = None

    def load(self, instruction: Instruction) -> None:
        """Load the weights the server sent; keys it left out stay local."""
        result = self.module.backbone.load_state_dict(instruction.weights, strict=False)
        if result.unexpected_keys:
            raise KeyError(f"client {self.name}: unexpected weights {result.unexpected_keys[:5]}")

    def get_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.backbone.state_dict().items()}

    def fit(self, instruction: Instruction) -> ClientUpdate:
        """Train locally from ``instruction``; raise :class:`RejectedUpdate` (and keep the
        weights this client had before the round) if training diverges."""
        before = self.get_weights()
        try:
            return self._fit(instruction)
        except NonFiniteLoss as err:
            self.module.backbone.load_state_dict(before)
            self.module.cpu()
            raise RejectedUpdate(
                self.name,
                f"training diverged in round {instruction.server_round}, {err}; lower train.lr "
                f"(now {self.module.lr:g}) or the method's loss weights, or check this site's data",
            ) from None
        except ValueError as err:
            if "Expected more than 1 value per channel" not in str(err):
                raise
            raise ConfigError(
                f"client {self.name}: BatchNorm got a batch of one value per channel ({err}); "
                "use train.batch_size of at least 2, a larger data.image_size, or "
                "model.norm=instance"
            ) from None

    def _fit(self, instruction: Instruction) -> ClientUpdate:
        # What a round draws from the global generators (dropout, anchor sampling) depends
        # on the run's seed, this site and the round only: the same in-process, on its own
        # machine, or resumed.
        with seeded(site_seed(self.seed, self.name, instruction.server_round)):
            return self._fit_seeded(instruction)

    def _fit_seeded(self, instruction: Instruction) -> ClientUpdate:
        self.load(instruction)
        for hook in self.module.hooks:
            hook.on_fit_start(self.module, instruction)
        self.module.loss_sums, self.module.steps, self.module._recorded_step = {}, 0, None
        with quiet_lightning():
            trainer = self._local_trainer()
            try:
                trainer.fit(self.module, train_dataloaders=self.loaders["train"])
            except BaseException as err:
                self._trainer = None  # a failed fit leaves no state for the next round
                if not (isinstance(err, SystemExit) and trainer.interrupted):
                    raise
                # Lightning answers Ctrl-C with exit(1) and ignores SIGINT from then on;
                # give the caller the KeyboardInterrupt back (and Ctrl-C its usual meaning).
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from None
        payload: dict[str, Any] = {}
        for hook in self.module.hooks:
            payload.update(hook.on_fit_end(self.module))
        steps = max(self.module.steps, 1)
        metrics = {f"loss/{k}": v / steps for k, v in self.module.loss_sums.items()}
        if self.module.device.type != "cpu":
            self.module.cpu()
        update = ClientUpdate(
            self.name, self.get_weights(), self.num_train_examples, metrics, payload
        )
        for hook in self.module.hooks:  # the one place an upload passes before it leaves
            update = hook.before_upload(update)
        return update

    def _local_trainer(self) -> L.Trainer:
        """This client's Lightning ``Trainer``, built once and kept between rounds (building
        one costs about as much as a small round's steps); each round gets fresh loops, so
        it starts at epoch 0 and step 0 as a new ``Trainer`` would."""
        if self._trainer is None:
            self._trainer = L.Trainer(
                max_epochs=self.local_epochs,
                accelerator=self.accelerator,
                devices=1,
                precision=self.precision,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
            )
            return self._trainer
        trainer = self._trainer
        fit_loop, epoch_loop = trainer.fit_loop, trainer.fit_loop.epoch_loop
        trainer.fit_loop = type(fit_loop)(
            trainer, min_epochs=fit_loop.min_epochs, max_epochs=fit_loop.max_epochs
        )
        trainer.fit_loop.epoch_loop = type(epoch_loop)(
            trainer, min_steps=epoch_loop.min_steps, max_steps=epoch_loop.max_steps
        )
        return trainer

    def evaluate(
        self, instruction: Instruction, split: str = "val", surface_metrics: bool = False
    ) -> dict[str, float]:
        """Score the instruction's weights on ``split``, on the device training uses (the
        model goes back to the CPU afterwards, where it is kept between rounds)."""
        self.load(instruction)
        device = evaluation_device(self.accelerator)
        model = self.module.backbone.to(device)
        try:
            return evaluate(
                model,
                self.loaders[split],
                self.regions,
                surface_metrics=surface_metrics,
                device=device,
                window=self.window,
                whole_image_pixels=self.whole_image_pixels,
                cases=getattr(self.loaders[split].dataset, "cases", None),
                largest_component=self.largest_component,
            )
        finally:
            if device.type != "cpu":
                self.module.cpu()

    def state_dict(self) -> dict[str, Any]:
        """Local state that must survive between rounds (optimiser, local weights, hooks)."""
        return {
            "optimizer": self.module.optimizer_state,
            "weights": self.get_weights(),
            "hooks": [hook.state_dict() for hook in self.module.hooks],
            "rng": loader_rng_state(self.loaders["train"]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.optimizer_state = state["optimizer"]
        self.module.backbone.load_state_dict(state["weights"])
        for hook, hook_state in zip(self.module.hooks, state["hooks"], strict=True):
            hook.load_state_dict(hook_state)
        restore_loader_rng(self.loaders["train"], state["rng"])
