"""The configuration's sections: one dataclass per section, with the defaults.

Examples
--------
>>> from fedbcs_lightning.config.schema import Config
>>> Config().train.method
'fedavg'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and why."""


@dataclass
class SyntheticConfig:
    """Options of the built-in synthetic multi-site data sets."""

    sites: int = 4  # number of generated sites
    images_per_site: int = 48  # images generated per site
    style_strength: float = 1.0  # how far apart the sites' acquisition styles lie (0: alike)


#: How ``0..255`` pixel values become the network's input (``data.intensity``).
INTENSITIES = ("unit", "minmax", "raw")
#: Training augmentations (``data.augmentation``), applied when ``data.augment`` is on.
AUGMENTATIONS = ("affine", "rot90_flip")


@dataclass
class DataConfig:
    name: str = "synthetic"  # data set (`fedbcs datasets` lists them)
    root: str | None = None  # folder of a real data set (else $FEDBCS_DATA/<name>)
    cache: str | None = None  # HDF5 file written by `fedbcs prepare`
    image_size: int = 64  # resize to (fundus, prostate) or crop/window size (nuclei, sites)
    augment: bool = True  # augment training images (data.augmentation)
    augmentation: str = "affine"  # affine | rot90_flip (the reference's prostate augmentation)
    intensity: str = "unit"  # network input: unit (x/255) | minmax (per image) | raw (0..255)
    resize_whole: bool = False  # whole-image data sets: resize each image to image_size
    num_workers: int = 0  # loader worker processes per site (0: read in the training process)
    crops_per_image: int = 4  # random crops per image and epoch (whole-image data sets)
    skip_unpaired: bool = False  # skip images without masks (with a warning) instead of failing
    leave_out: list[str] = field(default_factory=list)  # sites kept out of training (unseen)
    group_pattern: str | None = None  # regex on file stems; group 1 = patient/slide (one split)
    label_values: list[int] = field(default_factory=list)  # mask values -> classes 1..n (sites)
    train_foreground_only: bool | None = None  # None: the data set's default
    case_dice: bool | None = None  # Dice per case over its slices (3-D); None: data set's default
    eval_foreground_only: bool = False  # score only images with foreground (the reference's)
    largest_component: bool = False  # keep each predicted region's largest component (fundus)
    eval_batch_size: int = 0  # images per evaluation batch; 0: 1 for whole images, else batch
    volume_clip: list[float] = field(default_factory=lambda: [0.5, 99.5])  # volumes: percentiles
    edge_slices: bool = True  # volumes: keep the first and last slice (the reference drops them)
    val_fraction: float = 0.2  # share of each site's images for validation (model selection)
    test_fraction: float = 0.2  # share for the test (where a data set has no published split)
    folds: int = 0  # k >= 2: k-fold cross-validation over images/groups (0 = one seeded split)
    fold: int = 0  # with folds: which fold is the test split (0 .. folds-1)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    backbone: str = "unet"  # segmentation network (`fedbcs backbones` lists them)
    width: int = 16  # base width of the reference U-Net (the paper uses 32)
    norm: str = "batch"  # batch | batch_stateless (the reference's) | instance | group
    encoder: str = "resnet18"  # smp encoder name, for backbone smp-unet
    encoder_weights: str | None = None  # never downloaded implicitly
    # the backbone's own options (the dataclass it declares), passed to its constructor
    options: dict[str, Any] = field(default_factory=dict)  # the backbone's own options


@dataclass
class TrainConfig:
    method: str = "fedavg"  # federated method (`fedbcs methods` lists them)
    rounds: int = 30  # communication rounds
    local_epochs: int = 1  # passes over a site's training images per round
    clients: int | None = None  # use the first N sites; None = all
    batch_size: int = 8  # training images per step
    optimizer: str = "adam"  # adam | adamw | sgd (each site's, kept between rounds)
    lr: float = 1e-3  # learning rate
    weight_decay: float = 1e-4  # L2 weight decay of the optimiser
    momentum: float = 0.0  # sgd's momentum
    shuffle: bool = True  # shuffle training batches (the reference does not)


@dataclass
class ServerConfig:
    """How the server treats client updates (both engines)."""

    min_clients: int = 1  # accepted updates a round needs; fewer stops the run (resumable)
    # reject ||update - global|| > this x ||global|| over the shared tensors (0 = no bound);
    # honest updates measured up to 39 (benchmarks/update_norms.py): 1000 leaves a margin
    max_update_norm: float = 1000.0
    aggregation: str = "mean"  # mean (weighted by examples) | median | trimmed_mean (per weight)
    trim_fraction: float = 0.1  # share of the largest and of the smallest values trimmed_mean drops
    # Flower only: sites to wait for at the start (0 = min_clients), and time-outs in seconds
    sites: int = 0
    join_timeout: float = 600.0  # the longest the server waits for the sites at the start
    round_timeout: float = 3600.0  # the longest a round waits for a site's reply


@dataclass
class PrivacyConfig:
    """Differential privacy of what leaves a site (off by default; docs/privacy.md)."""

    mode: str = "off"  # off | sample (DP-SGD at each site) | client (clipped updates, server noise)
    noise_multiplier: float = 1.0  # Gaussian noise std / clip bound (DP-SGD, or the server's)
    max_grad_norm: float = 1.0  # sample: per-image gradient clip (L2)
    update_clip: float = 1.0  # client: clip of each site's update ||w_site - w_global|| (L2)
    prototype_noise_multiplier: float = 8.0  # sample: noise std / bound of prototype sums, counts
    prototype_clip: float = 1.0  # sample: bound on one image's class-mean feature (L2)
    delta: float = 1e-5  # the delta of (epsilon, delta)-differential privacy
    accountant: str = "rdp"  # Opacus accountant: rdp | prv
    noise_seed: int | None = None  # None: a secret per site; a number makes noise reproducible


@dataclass
class RunConfig:
    seed: int = 0  # seed of splits, initial weights, batch order and augmentations
    output: str | None = None  # run directory (default runs/<data set>-<method>-<time>)
    accelerator: str = "auto"  # cpu, gpu (cuda), mps, or auto (a GPU when there is one)
    precision: str = "32"  # training precision: 32, bf16-mixed or 16-mixed (through Lightning)
    channels_last: bool = False  # train in NHWC memory layout (faster convolutions on GPUs)
    compile: bool = False  # train through torch.compile (needs a C++ compiler on CPU)
    loggers: list[str] = field(default_factory=list)  # experiment trackers: wandb, csv, tensorboard
    log_images: int = 4  # validation images per site in logged overlays and plots (0 = none)
    checkpoint_every: int = 1  # write the resumable state every N rounds (and at the end)
    eval_every: int = 1  # validate every N rounds (and always the last round)
    whole_image_pixels: int = 4_194_304  # larger whole images are tiled (0 = always tile)
    # modules the run's code came from (--import): a record, never imported from a config
    imports: list[str] = field(default_factory=list)


@dataclass
class Config:
    """A run's whole configuration: the fixed sections, and one section per method that
    declares options (``config.fedbcs``, ``config.method_options("fedbcs")``), kept in
    :attr:`methods` and written at the top level like the others."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    #: method name -> its options (an instance of the dataclass the method registered)
    methods: dict[str, Any] = field(default_factory=dict, repr=False)

    def method_options(self, name: str | None = None) -> Any:
        """The options of method ``name`` (default ``train.method``): its section, else
        the defaults of the options it declares; ``None`` for a method without options."""
        from fedbcs_lightning.catalog import METHODS

        name = self.train.method if name is None else name
        if name in self.methods:
            return self.methods[name]
        options = METHODS.options(name)
        return None if options is None else options()

    def __getattr__(self, name: str) -> Any:
        # config.fedbcs: the section of a method (only for names that are not fields)
        if name.startswith("_") or "methods" not in self.__dict__:
            raise AttributeError(name)
        from fedbcs_lightning.catalog import METHODS

        if name in self.__dict__["methods"] or (name in METHODS and METHODS.options(name)):
            return self.method_options(name)
        raise AttributeError(f"{type(self).__name__!r} has no section {name!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in _SECTIONS}
        out.update({name: dataclasses.asdict(o) for name, o in self.methods.items()})
        return out


#: The fixed sections, in the order a saved config lists them.
_SECTIONS = [f for f in dataclasses.fields(Config) if f.name != "methods"]
