"""Frequency-domain style recalibration (FSR), the encoder half of FedBCS.

A feature map's Fourier amplitude carries style, its phase carries content. FSR mixes the
amplitude of ``x`` with that of its instance-normalised copy, keeps the phase of ``x``,
and learns how much style to keep:

    lam = softmax(h / 0.1);  A = lam0 |F(IN(x))| + lam1 |F(x)|
    out = w * ifft2(A * exp(i angle F(x))).real + b

Instance normalisation only shifts the zero frequency and scales every other one by
1/sigma, so the FFT form equals ``w * (lam0 * IN(x) + lam1 * x) + b`` to float precision.
That closed form is the default (``mode="closed"``), computed as one per-channel scale and
shift of ``x`` (``x * a + d``), so that backward keeps only ``x`` and its per-channel
statistics; ``mode="fft"`` computes the spectrum.
:class:`BandFrequencyStyleRecalibration` learns one mix per radial frequency band, which
has no closed form.

Examples
--------
>>> import torch
>>> x = torch.randn(2, 4, 9, 7)
>>> fast, slow = FrequencyStyleRecalibration(4), FrequencyStyleRecalibration(4, mode="fft")
>>> bool(torch.allclose(fast(x), slow(x), atol=1e-5))
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Per sample, per channel normalisation (eps 1e-5, biased variance, no affine)."""
    return F.instance_norm(x, eps=EPS)


class FrequencyStyleRecalibration(nn.Module):
    """FSR layer of FedBCS for ``channels``-channel feature maps.

    Parameters
    ----------
    channels:
        Channels of the feature map (for the per-channel affine ``w``, ``b``).
    mode:
        ``"closed"`` (exact closed form, the fast path) or ``"fft"`` (the reference's
        amplitude/phase computation).
    temperature:
        Softmax temperature of the mixing logits (0.1 in the paper).
    """

    def __init__(self, channels: int, mode: str = "closed", temperature: float = 0.1) -> None:
        super().__init__()
        if mode not in ("closed", "fft"):
            raise ValueError(f"FSR mode must be 'closed' or 'fft', got {mode!r}")
        self.mode = mode
        self.temperature = temperature
        self.mix_logits = nn.Parameter(torch.zeros(2))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def computes_spectra(self) -> bool:
        """Whether the forward pass takes Fourier transforms (ONNX exporters lack them)."""
        return self.mode != "closed"

    @property
    def mixing_weights(self) -> torch.Tensor:
        """``(lam_normalised, lam_original)``: how much of the de-styled vs. own amplitude."""
        return torch.softmax(self.mix_logits / self.temperature, dim=0)

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.mixing_weights
        if self.mode == "closed":
            return self._closed_form(x, lam[0], lam[1])
        return self._affine(self._fft_mix(x, lam[0], lam[1]))

    def _closed_form(self, x: torch.Tensor, lam_norm: torch.Tensor, lam_own: torch.Tensor):
        # w * (lam0 * (x - mu) * rstd + lam1 * x) + b  ==  x * a + d, per sample and channel:
        #   a = w * (lam0 * rstd + lam1),  d = b - w * lam0 * mu * rstd
        # One fused multiply-add over the map; autograd saves x and (N, C) statistics only.
        stats = x.float()
        var, mean = torch.var_mean(stats, dim=(-2, -1), correction=0, keepdim=True)
        rstd = torch.rsqrt(var + EPS)
        weight = self.weight[None, :, None, None]
        scale = weight * (lam_norm * rstd + lam_own)
        shift = self.bias[None, :, None, None] - weight * lam_norm * mean * rstd
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))

    @staticmethod
    def _fft_mix(x: torch.Tensor, lam_norm: torch.Tensor, lam_own: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fft2(x.float())
        normalised = torch.fft.fft2(instance_norm(x.float()))
        amplitude = lam_norm * normalised.abs() + lam_own * spectrum.abs()
        mixed = torch.polar(amplitude, spectrum.angle())
        return torch.fft.ifft2(mixed).real.to(x.dtype)


class BandFrequencyStyleRecalibration(FrequencyStyleRecalibration):
    """FSR with one learnable mix per radial frequency band (genuinely frequency-domain).

    Band ``k`` of ``bands`` holds the frequencies whose normalised radius lies in
    ``[k, k+1) / bands`` of the largest radius; low bands carry most of the style. At
    initialisation every band mixes (0.5, 0.5), which equals the plain FSR layer.
    """

    def __init__(self, channels: int, bands: int = 4, temperature: float = 0.1) -> None:
        super().__init__(channels, mode="fft", temperature=temperature)
        self.bands = bands
        self.mix_logits = nn.Parameter(torch.zeros(bands, 2))

    @property
    def mixing_weights(self) -> torch.Tensor:
        """``(bands, 2)``: per band, ``(lam_normalised, lam_original)``."""
        return torch.softmax(self.mix_logits / self.temperature, dim=-1)

    def band_index(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.fftfreq(width, device=device)[None, :]
        radius = torch.sqrt(fy**2 + fx**2)
        radius = radius / radius.max().clamp(min=1e-12)
        return (radius * self.bands).long().clamp(max=self.bands - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.mixing_weights[self.band_index(x.shape[-2], x.shape[-1], x.device)]
        y = self._fft_mix(x, lam[..., 0], lam[..., 1])
        return self._affine(y)


def build_fsr(channels: int, mode: str = "closed", bands: int = 4) -> FrequencyStyleRecalibration:
    """``mode``: ``closed`` (default), ``fft`` or ``band``."""
    if mode == "band":
        return BandFrequencyStyleRecalibration(channels, bands=bands)
    return FrequencyStyleRecalibration(channels, mode=mode)
