"""Pictures of images and label maps: colour overlays shared by prediction, logging and
reports. Pure NumPy; no plotting library is imported here."""

from __future__ import annotations

import numpy as np

#: One RGB colour per class index (background first, never painted). Chosen to read on
#: pink and purple H&E, on orange fundus photographs and on grey MRI alike: green, azure,
#: yellow and magenta first (none of them close to the tissue colours).
PALETTE = np.array(
    [
        [0, 0, 0],
        [0, 230, 64],
        [0, 160, 255],
        [255, 230, 0],
        [255, 0, 200],
        [255, 120, 0],
        [140, 60, 255],
        [0, 255, 230],
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
    [0, 230, 64]
    """
    mask = np.asarray(mask).astype(np.int64)
    return PALETTE[mask % len(PALETTE)]


def nested(regions: dict[str, list[int]] | None) -> bool:
    """Whether one region lies inside another (fundus: the cup inside the disc), which is
    read as contours rather than painted areas."""
    sets = [set(labels) for labels in (regions or {}).values()]
    return any(a < b for a in sets for b in sets)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.4,
    regions: dict[str, list[int]] | None = None,
) -> np.ndarray:
    """``image`` with the classes of ``mask`` painted on at opacity ``alpha`` and their
    outlines in full colour, so that small regions read on any background (``uint8 RGB``).
    With ``regions`` that nest (fundus: disc and cup), each region's contour only, one
    colour per region, as an ophthalmologist reads disc and cup on the image.

    >>> out = overlay(np.zeros((4, 4)), np.pad(np.ones((2, 2), int), 1))
    >>> out.shape, out[0, 0].tolist(), out[1, 1].tolist()
    ((4, 4, 3), [0, 0, 0], [0, 230, 64])
    """
    rgb = to_rgb(image).astype(np.float64)
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    if nested(regions):
        return _contours(rgb, mask, regions)
    painted = mask > 0
    colours = colorize(mask).astype(np.float64)
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colours[painted]
    edge = painted & _boundary(mask)
    rgb[edge] = colours[edge]
    return rgb.round().astype(np.uint8)


def _contours(rgb: np.ndarray, mask: np.ndarray, regions: dict[str, list[int]]) -> np.ndarray:
    """Each region's outline (about 1/128 of the image's size thick, at least one pixel),
    the k-th region in the k-th class colour (fundus: the disc green, the cup azure)."""
    thickness = max(1, round(max(mask.shape) / 128))
    for k, labels in enumerate(regions.values(), start=1):
        inside = np.isin(mask, labels).astype(np.int64)
        edge = inside.astype(bool) & _boundary(inside)
        for _ in range(thickness - 1):
            edge = _grow(edge)
        rgb[edge] = PALETTE[k % len(PALETTE)]
    return rgb.round().astype(np.uint8)


def _grow(edge: np.ndarray) -> np.ndarray:
    grown = edge.copy()
    grown[1:] |= edge[:-1]
    grown[:-1] |= edge[1:]
    grown[:, 1:] |= edge[:, :-1]
    grown[:, :-1] |= edge[:, 1:]
    return grown


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another label (or the image border)."""
    padded = np.pad(mask, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(mask.shape, bool)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        edge |= shifted != centre
    return edge


def foreground_shares(mask: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """The share of the pixels of each foreground class in a label map.

    >>> foreground_shares(np.array([[0, 1], [1, 2]]), ["background", "rim", "cup"])
    {'rim': 0.5, 'cup': 0.25}
    """
    mask = np.asarray(mask)
    return {name: float((mask == k).mean()) for k, name in enumerate(class_names) if k > 0}


def with_legend(picture: np.ndarray, class_names: list[str]) -> np.ndarray:
    """``picture`` with a band below that names each foreground class in its colour."""
    from PIL import Image, ImageDraw

    height, width = picture.shape[:2]
    canvas = Image.new("RGB", (width, height + 16), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 2
    for k, name in enumerate(class_names):
        if k == 0:
            continue
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        draw.rectangle([x, height + 3, x + 10, height + 13], fill=colour, outline=(0, 0, 0))
        draw.text((x + 13, height + 2), name, fill=(0, 0, 0))
        x += 13 + int(draw.textlength(name)) + 8
    return np.asarray(canvas)
