"""Export a trained network to ONNX or TorchScript, checked against PyTorch before writing.

The exported graph maps images ``(N, C, S, S)`` (float in [0, 1], prepared as in
training; ``S`` is the training image size) to logits ``(N, K, S, S)``; the batch size
``N`` is free. Larger images are segmented with sliding ``S`` x ``S`` windows, as
:func:`fedbcs_lightning.evaluation.metrics.predict_logits` does.

Before anything is written, the exported model is loaded back (ONNX Runtime, or
``torch.jit.load``) and run on a random batch of another size than the one it was
exported with; its logits must match PyTorch's within a tolerance. The file is then
written atomically: the bytes written are the bytes checked.

Examples
--------
>>> import tempfile, pathlib
>>> from fedbcs_lightning.models.unet import UNet
>>> path = pathlib.Path(tempfile.mkdtemp()) / "unet.pt"
>>> result = export_model(UNet(3, 2, width=4), path, "torchscript", image_size=32, in_channels=3)
>>> result.path == path, result.max_abs_diff < 1e-4
(True, True)
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedbcs_lightning.io import atomic_write

FORMATS = ("onnx", "torchscript")


class ExportError(RuntimeError):
    """The model could not be exported, or the exported model does not match it."""


@dataclass
class ExportResult:
    """Where the model went, how, and the largest logit difference the check found."""

    path: Path
    format: str
    exporter: str
    max_abs_diff: float


def export_model(
    model: torch.nn.Module,
    path: str | Path,
    format: str = "onnx",
    image_size: int = 64,
    in_channels: int = 3,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportResult:
    """Export ``model`` (in eval mode) to ``path`` as ``format`` (``onnx`` or
    ``torchscript``), check the export on a random batch, then write it atomically.

    ONNX uses PyTorch's default (``torch.export``-based) exporter and falls back to the
    TorchScript-based one if it fails (except for FSR layers that compute spectra, which
    that one cannot translate). Raises :class:`ExportError` when the export fails or when
    the exported logits differ from PyTorch's by more than ``atol + rtol * |logit|``;
    nothing is written then.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose {' or '.join(FORMATS)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, in_channels, image_size, image_size, generator=generator)
    probe = torch.rand(3, in_channels, image_size, image_size, generator=generator)
    try:
        with torch.no_grad():
            if format == "onnx":
                data, exporter = _onnx_bytes(model, example.to(device))
                run = _onnx_runner(data)
            else:
                data, exporter = _torchscript_bytes(model, example.to(device)), "torch.jit.trace"
                run = _torchscript_runner(data, device)
            expected = model(probe.to(device)).cpu().numpy()
    finally:
        model.train(was_training)
    got = run(probe.numpy())
    diff = _check(expected, got, atol, rtol, format)
    written = atomic_write(path, lambda handle: handle.write(data))
    return ExportResult(written, format, exporter, diff)


def _check(expected: np.ndarray, got: np.ndarray, atol: float, rtol: float, fmt: str) -> float:
    """Largest absolute difference; :class:`ExportError` if outside the tolerance."""
    if got.shape != expected.shape:
        raise ExportError(
            f"the exported {fmt} model returns shape {got.shape}, PyTorch {expected.shape}; "
            "nothing was written"
        )
    diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        raise ExportError(
            f"the exported {fmt} model differs from the PyTorch model by up to {diff:.3g} "
            f"(tolerance {atol} + {rtol} * |logit|); nothing was written"
        )
    return diff


def _summary(err: BaseException) -> str:
    """One line of an exporter's (often very long) error message: its root cause."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("<class ")]
    line = causes[0] if causes else (lines[0] if lines else type(err).__name__)
    return re.sub(r"^<class '[\w.]+'>: ", "", line)[:300]


def _frequency_layers(model: torch.nn.Module) -> list[str]:
    """Names of layers that compute Fourier spectra (they say so with
    ``computes_spectra``: FSR with ``fsr_mode`` fft or band)."""
    return [
        name for name, module in model.named_modules() if getattr(module, "computes_spectra", False)
    ]


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> tuple[bytes, str]:
    """The serialised ONNX model and the exporter that made it: PyTorch's default
    exporter, else the TorchScript-based one (which has no Fourier transforms, so it is
    not tried for FSR layers that compute spectra)."""
    try:
        return _export_onnx(model, example), "torch.export"
    except Exception as first:  # the exporters raise many types
        layers = _frequency_layers(model)
        if layers:
            raise ExportError(
                f"ONNX export failed ({_summary(first)}). The model's FSR layers "
                f"({', '.join(layers)}) compute Fourier spectra: export with format "
                "torchscript instead, or use a model trained with fedbcs.fsr_mode=closed"
            ) from None
        try:
            return _export_onnx_torchscript_based(model, example), "torchscript-based"
        except Exception as second:
            raise ExportError(
                f"ONNX export failed (torch.export-based exporter: {_summary(first)}; "
                f"TorchScript-based exporter: {_summary(second)}); try format torchscript"
            ) from None


_NAMES = {"input_names": ["image"], "output_names": ["logits"]}


def _export_onnx(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
            **_NAMES,
        )
    return program.model_proto.SerializeToString()


def _export_onnx_torchscript_based(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            **_NAMES,
        )
    return buffer.getvalue()


def _onnx_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ExportError(
            f"ONNX Runtime cannot load the exported model ({_summary(err)})"
        ) from None
    return lambda images: session.run(None, {"image": images})[0]


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``torch.jit.trace`` (deprecated in recent PyTorch, hence the silenced warnings).
    Its own re-run check is off: :func:`export_model` checks on another batch size."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as err:  # tracing raises many types
            raise ExportError(f"TorchScript tracing failed ({_summary(err)})") from None
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _torchscript_runner(data: bytes, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(data), map_location=device)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(images).to(device)).cpu().numpy()

    return run
