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
    (block,) = [b for b in _python_blocks() if "@BACKBONES.register" in b]
    try:
        exec(compile(block, "README.md", "exec"), {})
        net = create_backbone("tiny-unet", in_channels=3, num_classes=2, width=4)
        out = net.forward_features(torch.randn(2, 3, 16, 16))
        assert out.logits.shape == (2, 2, 16, 16)
        assert [f.shape[1] for f in out.encoder] == list(net.encoder_channels)
        assert [f.shape[1] for f in out.decoder] == list(net.decoder_channels)
    finally:
        BACKBONES._entries.pop("tiny-unet", None)


def test_the_plugin_test_kit_example_runs_on_the_readme_examples(tmp_path):
    """The README's backbone, method and contract-test blocks, as a plugin's test suite
    would hold them, pass the contract under pytest."""
    import subprocess
    import sys

    blocks = _python_blocks()
    (backbone,) = [b for b in blocks if "@BACKBONES.register" in b]
    (method,) = [b for b in blocks if "@METHODS.register" in b]
    (kit,) = [b for b in blocks if "MethodContract" in b]
    (tmp_path / "my_nets.py").write_text(backbone)
    (tmp_path / "my_methods.py").write_text(method)
    (tmp_path / "test_my_plugin.py").write_text(
        "import my_methods  # noqa\nimport my_nets  # noqa\n" + kit
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
