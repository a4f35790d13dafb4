import numpy as np
import onnxruntime
import pytest
import torch

from fedbcs_lightning.evaluation import export as export_module
from fedbcs_lightning.evaluation.export import ExportError, export_model
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.methods.fedbcs.fsr import BandFrequencyStyleRecalibration
from fedbcs_lightning.methods.fedbcs.strategy import FedBCS
from fedbcs_lightning.methods.options import FedBCSOptions
from fedbcs_lightning.models.unet import UNet


def tiny(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    strategy = FedBCS(FedBCSOptions(cdpa=True, prototype_dim=8)) if method == "fedbcs" else FedAvg()
    return strategy.configure_backbone(UNet(3, 3, width=4)).eval()


def onnx_logits(path, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images.numpy()})[0]


def test_fedbcs_to_onnx_matches_pytorch_for_any_batch_size(tmp_path):
    model = tiny("fedbcs")
    result = export_model(model, tmp_path / "fedbcs.onnx", "onnx", image_size=32, in_channels=3)
    assert result.path == tmp_path / "fedbcs.onnx" and result.exporter == "torch.export"
    assert result.max_abs_diff < 1e-4
    for batch in (1, 4):
        images = torch.rand(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(images).numpy()
        np.testing.assert_allclose(onnx_logits(result.path, images), expected, atol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("method", ["fedavg", "fedbcs"])
def test_torchscript_matches_pytorch(method, tmp_path):
    model = tiny(method)
    result = export_model(model, tmp_path / "model.pt", "torchscript", 32, 3)
    loaded = torch.jit.load(str(result.path))
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), atol=1e-5, rtol=1e-5)


def test_onnx_falls_back_to_the_torchscript_based_exporter(tmp_path, monkeypatch):
    def broken(model, example):
        raise RuntimeError("default exporter unavailable")

    monkeypatch.setattr(export_module, "_export_onnx", broken)
    model = tiny("fedavg")
    result = export_model(model, tmp_path / "fedavg.onnx", "onnx", 32, 3)
    assert result.exporter == "torchscript-based"
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(
            onnx_logits(result.path, images), model(images).numpy(), atol=1e-4
        )


class BandOnly(torch.nn.Module):
    """A band-FSR layer alone: the smallest model with Fourier-band mixing."""

    def __init__(self) -> None:
        super().__init__()
        self.fsr = BandFrequencyStyleRecalibration(3, bands=2)

    def forward(self, x):
        return self.fsr(x)


def test_band_fsr_to_onnx_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match=r"FSR layers \(fsr\).*format torchscript"):
        export_model(BandOnly(), tmp_path / "band.onnx", "onnx", 16, 3)
    assert not list(tmp_path.iterdir())
    result = export_model(BandOnly(), tmp_path / "band.pt", "torchscript", 16, 3)
    assert result.max_abs_diff < 1e-4


class BatchFrozen(torch.nn.Module):
    """Scales by the batch size read as a Python int, which a trace freezes: an export
    traced on one batch size is wrong on another."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x) * int(x.shape[0])


def test_an_export_that_differs_is_refused(tmp_path):
    with pytest.raises(ExportError, match="differs from the PyTorch model by up to"):
        export_model(BatchFrozen(), tmp_path / "frozen.pt", "torchscript", 16, 3)
    assert not list(tmp_path.iterdir())


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose onnx or"):
        export_model(tiny("fedavg"), tmp_path / "x", "tflite", 32, 3)
