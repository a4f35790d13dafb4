"""The library's contract tests, run on this plugin's backbone and method."""

import fedbcs_example_plugin  # noqa: F401  (registers, where no entry point did)

from fedbcs_lightning.testing import BackboneContract, MethodContract


class TestTinyUNet(BackboneContract):
    backbone = "tiny-unet"
    options = {"depth": 3, "width": 4}


class TestTinyUNetDefaults(BackboneContract):
    backbone = "tiny-unet"


class TestFedAvgM(MethodContract):
    method = "fedavgm"
    options = {"momentum": 0.5, "clip": 5.0}


class TestFedAvgMOnThePluginBackbone(MethodContract):
    method = "fedavgm"
    sections = {"model": {"backbone": "tiny-unet", "options": {"depth": 3}}}
