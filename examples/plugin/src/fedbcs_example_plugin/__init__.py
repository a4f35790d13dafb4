"""An example fedbcs-lightning plugin: backbone ``tiny-unet`` and method ``fedavgm``.

Installed, the package registers both through entry points; without installing it,
``fedbcs fit --import fedbcs_example_plugin`` registers them on import.
"""

from fedbcs_example_plugin.backbone import TinyUNet
from fedbcs_example_plugin.method import FedAvgM
from fedbcs_lightning.catalog import BACKBONES, METHODS

for _registry, _name, _target in (
    (BACKBONES, "tiny-unet", TinyUNet),
    (METHODS, "fedavgm", FedAvgM),
):
    if _name not in _registry:  # an installed copy registered it through its entry point
        _registry.register(_name, _target)

__all__ = ["FedAvgM", "TinyUNet"]
