"""The README's code examples run as written."""

import re
from pathlib import Path

import torch

from fedbcs_lightning.catalog import BACKBONES
from fedbcs_lightning.models import create_backbone

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_add_a_backbone_example_registers_a_working_backbone():
    (block,) = [b for b in _python_blocks() if "tiny-unet" in b]
    try:
        exec(compile(block, "README.md", "exec"), {})
        net = create_backbone("tiny-unet", in_channels=3, num_classes=2)
        out = net.forward_features(torch.randn(2, 3, 16, 16))
        assert out.logits.shape == (2, 2, 16, 16)
        assert [f.shape[1] for f in out.encoder] == list(net.encoder_channels)
        assert [f.shape[1] for f in out.decoder] == list(net.decoder_channels)
    finally:
        BACKBONES._entries.pop("tiny-unet", None)
