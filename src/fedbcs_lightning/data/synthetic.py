"""Built-in synthetic multi-site data: the same anatomy, a different acquisition per site.

Content (what is segmented) is drawn from one distribution for every site; each site has
its own *acquisition style*: colour cast, contrast and gamma, an illumination field, blur,
noise and a shift of the low-frequency Fourier amplitude (the kind of difference that
separates scanners and cameras). ``style_strength`` scales every style deviation
(0 = identical sites). Everything is a deterministic function of the seed.

Two variants:

- :func:`synthetic_fundus`: RGB fundus-like crops with vessels, an optic disc and a cup
  (labels 0 background, 1 disc rim, 2 cup; Dice is reported for disc = rim + cup, and cup).
- :func:`synthetic_prostate`: grey MR-like slices with one organ (labels 0/1).

Examples
--------
>>> from fedbcs_lightning.data.synthetic import render_sites
>>> data = render_sites("fundus", num_sites=2, images_per_site=3, size=32, seed=0)
>>> [s.images.shape for s in data.sites]
[(3, 32, 32, 3), (3, 32, 32, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from fedbcs_lightning.data.federated import FederatedData, Site


@dataclass(frozen=True)
class SiteStyle:
    """One site's acquisition parameters (neutral values: gains 1, gamma 1, no blur...)."""

    gains: tuple[float, ...]
    contrast: float
    gamma: float
    illumination: float
    illumination_angle: float
    blur_sigma: float
    noise_std: float
    amplitude_gains: tuple[float, ...]

    @classmethod
    def draw(cls, rng: np.random.Generator, channels: int, strength: float) -> SiteStyle:
        s = strength
        return cls(
            gains=tuple(float(np.exp(s * rng.normal(0, 0.25))) for _ in range(channels)),
            contrast=float(np.exp(s * rng.normal(0, 0.3))),
            gamma=float(np.exp(s * rng.normal(0, 0.3))),
            illumination=float(s * rng.uniform(0.0, 0.4)),
            illumination_angle=float(rng.uniform(0, 2 * np.pi)),
            blur_sigma=float(s * rng.uniform(0.0, 1.0)),
            noise_std=float(s * rng.uniform(0.0, 0.04)),
            amplitude_gains=tuple(float(np.exp(s * rng.normal(0, 0.35))) for _ in range(channels)),
        )

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the style to an ``(H, W, C)`` image in [0, 1]; returns float32 in [0, 1]."""
        h, w, _ = image.shape
        scale = h / 64.0
        x = image.astype(np.float64)
        x = _shift_low_frequency_amplitude(x, np.asarray(self.amplitude_gains), radius=0.08)
        x = np.clip(x, 0, 1) * np.asarray(self.gains)
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = np.clip((x - mean) * self.contrast + mean, 0, 1) ** self.gamma
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w) - 0.5
        ramp = np.cos(self.illumination_angle) * xx + np.sin(self.illumination_angle) * yy
        field = 1.0 + self.illumination * (2 * ramp - (xx**2 + yy**2))
        x = x * field[..., None]
        if self.blur_sigma > 0:
            x = ndimage.gaussian_filter(x, sigma=(self.blur_sigma * scale,) * 2 + (0,))
        x = x + rng.normal(0, self.noise_std, size=x.shape)
        return np.clip(x, 0, 1).astype(np.float32)


def _shift_low_frequency_amplitude(x: np.ndarray, gains: np.ndarray, radius: float) -> np.ndarray:
    """Scale the Fourier amplitude inside a low-frequency disc, per channel; keep phase."""
    h, w, _ = x.shape
    spectrum = np.fft.fft2(x, axes=(0, 1))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    low = (np.sqrt(fy**2 + fx**2) <= radius) & ~((fy == 0) & (fx == 0))
    factor = np.where(low[..., None], gains[None, None, :], 1.0)
    return np.fft.ifft2(spectrum * factor, axes=(0, 1)).real


def _blob(
    size: int,
    cy: float,
    cx: float,
    radius: float,
    rng: np.random.Generator,
    irregularity: float = 0.08,
) -> np.ndarray:
    """Signed normalised distance to a wobbly ellipse boundary (< 0 inside)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.85, 1.15)
    dy, dx = yy - cy, xx - cx
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / aspect
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect
    theta = np.arctan2(v, u)
    wobble = sum(
        irregularity * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / k
        for k in (2, 3, 4)
    )
    return np.sqrt(u**2 + v**2) / (radius * (1 + wobble)) - 1.0


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return noise / (noise.std() + 1e-8)


def _fundus_content(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = np.array([0.78, 0.36, 0.16])
    texture = 1 + 0.06 * _smooth_noise((size, size), rng, size / 16)
    image = base[None, None, :] * texture[..., None]
    cy, cx = rng.uniform(0.38, 0.62, size=2) * size
    disc_r = rng.uniform(0.16, 0.26) * size
    disc = _blob(size, cy, cx, disc_r, rng)
    cup = _blob(
        size,
        cy + rng.normal(0, 0.05) * disc_r,
        cx + rng.normal(0, 0.05) * disc_r,
        disc_r * rng.uniform(0.35, 0.65),
        rng,
        irregularity=0.05,
    )
    soft = lambda d, width: 1 / (1 + np.exp(d / width))  # noqa: E731
    image = (
        image * (1 - soft(disc, 0.06)[..., None])
        + np.array([0.95, 0.68, 0.38]) * soft(disc, 0.06)[..., None]
    )
    image = (
        image * (1 - soft(cup, 0.15)[..., None])
        + np.array([1.0, 0.9, 0.7]) * soft(cup, 0.15)[..., None]
    )
    vessels = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(4, 8)):
        point = np.array([cx, cy]) + rng.normal(0, 0.2 * disc_r, 2)
        heading = rng.uniform(0, 2 * np.pi)
        thickness = rng.uniform(0.02, 0.035) * size
        pts = [point.copy()]
        for _ in range(12):
            heading += rng.normal(0, 0.25)
            point = point + np.array([np.cos(heading), np.sin(heading)]) * size / 12
            pts.append(point.copy())
        cv2.polylines(
            vessels,
            [np.round(np.array(pts) * 16).astype(np.int32)],
            False,
            1.0,
            thickness=max(1, int(round(thickness))),
            lineType=cv2.LINE_AA,
            shift=4,
        )
    vessels = ndimage.gaussian_filter(vessels, 0.5)[..., None]
    image = image * (1 - 0.7 * vessels) + np.array([0.45, 0.1, 0.06]) * 0.7 * vessels
    label = np.zeros((size, size), np.uint8)
    label[disc < 0] = 1
    label[(cup < 0) & (disc < 0)] = 2
    return np.clip(image, 0, 1), label


def _prostate_content(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = ((xx - 0.5) / 0.46) ** 2 + ((yy - 0.52) / 0.4) ** 2 < 1
    image = np.where(body, 0.35, 0.03) * (1 + 0.12 * _smooth_noise((size, size), rng, size / 20))
    cy, cx = rng.uniform(0.45, 0.58) * size, rng.uniform(0.42, 0.58) * size
    radius = rng.uniform(0.1, 0.18) * size
    organ = _blob(size, cy, cx, radius, rng, irregularity=0.1)
    bladder = _blob(size, cy - 1.7 * radius, cx + rng.normal(0, 0.05) * size, 0.9 * radius, rng)
    rectum = _blob(size, cy + 1.6 * radius, cx, 0.6 * radius, rng)
    image = np.where(bladder < 0, 0.85, image)
    image = np.where(rectum < 0, 0.12, image)
    zone = np.clip(-organ, 0, 1)
    organ_tone = 0.55 - 0.25 * np.clip(zone * 2.5, 0, 1)  # bright periphery, darker centre
    image = np.where(
        organ < 0, organ_tone * (1 + 0.1 * _smooth_noise((size, size), rng, 1.5)), image
    )
    image = ndimage.gaussian_filter(image, 0.6)
    label = (organ < 0).astype(np.uint8)
    return np.clip(image, 0, 1)[..., None], label


_VARIANTS = {
    "fundus": (_fundus_content, 3, ["background", "disc rim", "cup"], {"disc": [1, 2], "cup": [2]}),
    "prostate": (_prostate_content, 1, ["background", "prostate"], {"prostate": [1]}),
}


def render_sites(
    variant: str,
    num_sites: int = 4,
    images_per_site: int = 48,
    size: int = 64,
    seed: int = 0,
    style_strength: float = 1.0,
) -> FederatedData:
    """Render ``num_sites`` sites of ``images_per_site`` images each, deterministically."""
    content, channels, class_names, regions = _VARIANTS[variant]
    sites = []
    for k in range(num_sites):
        style = SiteStyle.draw(np.random.default_rng([seed, k, 1]), channels, style_strength)
        rng = np.random.default_rng([seed, k, 0])
        images, masks = [], []
        for _ in range(images_per_site):
            image, mask = content(size, rng)
            images.append(np.round(style.apply(image, rng) * 255).astype(np.uint8))
            masks.append(mask)
        sites.append(Site(f"site{k + 1}", np.stack(images), np.stack(masks)))
    return FederatedData(f"synthetic-{variant}", sites, class_names, regions)


def synthetic_fundus(config) -> FederatedData:
    """Fundus-like sites (optic disc and cup) for the ``synthetic`` data set."""
    opts = config.data.synthetic
    return render_sites(
        "fundus",
        opts.sites,
        opts.images_per_site,
        config.data.image_size,
        config.run.seed,
        opts.style_strength,
    )


def synthetic_prostate(config) -> FederatedData:
    """Grey single-organ sites for the ``synthetic-prostate`` data set."""
    opts = config.data.synthetic
    return render_sites(
        "prostate",
        opts.sites,
        opts.images_per_site,
        config.data.image_size,
        config.run.seed,
        opts.style_strength,
    )
