"""The built-in registries. Importing this module is cheap: entries load on first use.

Register your own entries from your code::

    from fedbcs_lightning.catalog import BACKBONES

    @BACKBONES.register("my-net", description="my backbone")
    class MyNet(SegmentationBackbone): ...
"""

from __future__ import annotations

from fedbcs_lightning.registry import Registry

#: Installed packages add entries through these entry-point groups (see README, "Add a
#: backbone"); ``--import MODULE`` (config ``run.imports``) imports a module that registers.
BACKBONES = Registry("backbone", "fedbcs_lightning.backbones")
DATASETS = Registry("data set", "fedbcs_lightning.datasets")
METHODS = Registry("method", "fedbcs_lightning.methods")

#: The experiment trackers ``run.loggers`` accepts (:mod:`fedbcs_lightning.callbacks.loggers`).
LOGGERS = ("wandb", "csv", "tensorboard")

BACKBONES.register_lazy(
    "unet",
    "fedbcs_lightning.models.unet:UNet",
    "reference U-Net of FedBCS (4 levels; width and norm configurable)",
)
BACKBONES.register_lazy(
    "smp-unet",
    "fedbcs_lightning.models.smp_unet:SmpUNet",
    "segmentation-models-pytorch U-Net with any ResNet-style encoder (no pretrained weights)",
)

DATASETS.register_lazy(
    "synthetic",
    "fedbcs_lightning.data.synthetic:synthetic_fundus",
    "built-in fundus-like sites (optic disc and cup), one acquisition style per site",
)
DATASETS.register_lazy(
    "synthetic-prostate",
    "fedbcs_lightning.data.synthetic:synthetic_prostate",
    "built-in grey single-organ (prostate-like) sites, one acquisition style per site",
)

DATASETS.register_lazy(
    "fundus",
    "fedbcs_lightning.data.real:fundus",
    "optic disc and cup, 4 sites (DoFE, FedDG or FedLC layout)",
    # what the real two-hospital study ran (README, "Results on real fundus"): the
    # 512x512 regions of interest at 128x128 and 20 rounds, a CPU run of minutes
    defaults={"data": {"image_size": 128}, "train": {"rounds": 20}},
)
DATASETS.register_lazy(
    "prostate",
    "fedbcs_lightning.data.real:prostate",
    "prostate T2 MRI, 6 sites (SAML NIfTI volumes as 2.5-D slices, or 2-D slices)",
)
DATASETS.register_lazy(
    "nuclei",
    "fedbcs_lightning.data.folders:nuclei",
    "H&E nuclei, one folder per site (<site>/{images,masks}), native resolution",
)
DATASETS.register_lazy(
    "sites",
    "fedbcs_lightning.data.folders:site_folders",
    "any folder of sites: <root>/<site>/{images,masks}/<stem>.*",
)

METHODS.register_lazy(
    "fedavg",
    "fedbcs_lightning.methods.fedavg:FedAvg",
    "FedAvg: average all weights, weighted by client training-set size",
)
METHODS.register_lazy(
    "fedbcs",
    "fedbcs_lightning.methods.fedbcs.strategy:FedBCS",
    "FedBCS: FedAvg + frequency-domain style recalibration (+ dual-level prototype alignment "
    "with fedbcs.cdpa=true)",
    options="fedbcs_lightning.methods.options:FedBCSOptions",
)
METHODS.register_lazy(
    "fedprox",
    "fedbcs_lightning.methods.baselines:FedProx",
    "FedProx: FedAvg + proximal term mu/2 ||w - w_global||^2 on clients (fedprox.mu)",
    options="fedbcs_lightning.methods.options:FedProxOptions",
)
METHODS.register_lazy(
    "fedbn",
    "fedbcs_lightning.methods.baselines:FedBN",
    "FedBN: FedAvg with BatchNorm weights and statistics kept local",
)
METHODS.register_lazy(
    "local",
    "fedbcs_lightning.methods.baselines:LocalOnly",
    "local: each site trains alone, no aggregation (a lower bound)",
)
METHODS.register_lazy(
    "moon",
    "fedbcs_lightning.methods.moon:Moon",
    "MOON: FedAvg + model-contrastive loss on the pooled bottleneck (moon.mu, moon.tau)",
    options="fedbcs_lightning.methods.options:MoonOptions",
)
METHODS.register_lazy(
    "fpl",
    "fedbcs_lightning.methods.fpl:FPL",
    "FPL: FedAvg + last-layer class prototypes, FINCH clusters, InfoNCE + MSE (fpl.tau)",
    options="fedbcs_lightning.methods.options:FPLOptions",
)
METHODS.register_lazy(
    "harmofl",
    "fedbcs_lightning.methods.harmofl:HarmoFL",
    "HarmoFL: local amplitude normalisation of inputs + weight perturbation (harmofl.alpha)",
    options="fedbcs_lightning.methods.options:HarmoFLOptions",
)
METHODS.register_lazy(
    "pooled",
    "fedbcs_lightning.methods.baselines:Pooled",
    "pooled: all sites' training data in one model, evaluated per site (an upper bound)",
)
