"""Pictures of images and label maps: colour overlays shared by prediction, logging and
reports. Pure NumPy; no plotting library is imported here."""

from __future__ import annotations

import numpy as np

#: One RGB colour per class index (background first, never painted).
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
    ],
    dtype=np.uint8,
)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An image ``(C, H, W)`` or ``(H, W, C)`` or ``(H, W)``, any range, as ``uint8 (H, W, 3)``.

    Channels-first input is recognised by a first axis of 1 or 3; one channel becomes
    grey; more than three (2.5-D slices) shows the middle one. Values are min-max scaled.

    >>> to_rgb(np.zeros((3, 4, 5))).shape
    (4, 5, 3)
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] not in (1, 3):
        middle = array.shape[-1] // 2
        array = array[..., middle : middle + 1]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled * 255).round().astype(np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Label map ``(H, W)`` of class indices as ``uint8 (H, W, 3)`` colours.

    >>> colorize(np.array([[0, 1]]))[0, 1].tolist()
    [230, 25, 75]
    """
    mask = np.asarray(mask).astype(np.int64)
    return PALETTE[mask % len(PALETTE)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` with the classes of ``mask`` painted on at opacity ``alpha`` (``uint8 RGB``).

    >>> out = overlay(np.zeros((4, 4)), np.eye(4, dtype=int))
    >>> out.shape, out[0, 0].tolist(), out[0, 1].tolist()
    ((4, 4, 3), [104, 11, 34], [0, 0, 0])
    """
    rgb = to_rgb(image).astype(np.float64)
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    painted = mask > 0
    colours = colorize(mask).astype(np.float64)
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colours[painted]
    return rgb.round().astype(np.uint8)
