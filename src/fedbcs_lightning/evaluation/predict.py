"""Segment image files with a trained model.

Images are prepared as in training: read as ``uint8`` ``(H, W, C)``, resized to the
training size with the same interpolation (or, for data sets of whole images, kept at
their size and segmented with sliding windows of the training size), scaled to [0, 1].

Examples
--------
>>> from fedbcs_lightning.evaluation.checkpoints import load_model
>>> from fedbcs_lightning.evaluation.predict import predict_file
>>> model, info = load_model("runs/demo/checkpoints/selected.pt")  # doctest: +SKIP
>>> image, mask = predict_file(model, info, "scan.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from fedbcs_lightning.data import DataError, SegmentationDataset, Site
from fedbcs_lightning.data.readers import IMAGE_SUFFIXES, read_image, resize_pair
from fedbcs_lightning.evaluation.checkpoints import ModelInfo
from fedbcs_lightning.evaluation.metrics import (
    WHOLE_IMAGE_PIXELS,
    keep_largest_components,
    predict_logits,
)
from fedbcs_lightning.io import atomic_write


@torch.no_grad()
def predict_masks(
    model: torch.nn.Module,
    images: torch.Tensor,
    window: int | None = None,
    whole_image_pixels: int = WHOLE_IMAGE_PIXELS,
) -> torch.Tensor:
    """Label maps ``(B, H, W)`` (long, on the CPU) for images ``(B, C, H, W)`` in [0, 1];
    with ``window``, whole images of any size (see :func:`predict_logits`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    try:
        logits = predict_logits(model, images.to(device), window, whole_image_pixels)
        return logits.argmax(1).cpu()
    finally:
        model.train(was_training)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named, and the image files directly inside the folders named.

    Two inputs with the same file stem are an error (their outputs would collide).
    """
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(
                p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(
                    f"{entry}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            files += found
        elif entry.is_file():
            files.append(entry)
        else:
            raise DataError(f"{entry}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen and seen[path.stem] != path:
            raise DataError(
                f"{seen[path.stem]} and {path} have the same name {path.stem!r}; their "
                "outputs would overwrite each other"
            )
        seen[path.stem] = path
    return list(dict.fromkeys(files))


def match_channels(image: np.ndarray, channels: int, path: str | Path) -> np.ndarray:
    """Give an ``(H, W, C)`` image the model's channel count: one channel is repeated, a
    one-channel model takes the first channel (as grey slices are read for training)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1:
        return image[..., :1]
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    raise DataError(f"{path}: image has {have} channels but the model expects {channels}")


def to_model_input(image: np.ndarray, info: ModelInfo) -> torch.Tensor:
    """``(1, C, H, W)`` float tensor of an ``(H, W, C)`` uint8 image, prepared as in
    training: resized to the training size (unless the data set keeps whole images),
    then converted by :class:`~fedbcs_lightning.data.SegmentationDataset` with the run's
    ``data.intensity``."""
    placeholder = np.zeros(image.shape[:2], np.uint8)
    if not info.whole_images:
        image, placeholder = resize_pair(image, placeholder, info.image_size)
    site = Site("input", [image], [placeholder])
    tensor, _ = SegmentationDataset(site, [0], intensity=info.config.data.intensity)[0]
    return tensor[None]


def predict_file(
    model: torch.nn.Module, info: ModelInfo, path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``path`` and segment it: the image ``(H, W, C)`` uint8 as the model saw it
    before resizing, and its label map ``(H, W)`` uint8 of class indices at that size."""
    import cv2

    image = match_channels(read_image(path), info.in_channels, path)
    pixels = info.config.run.whole_image_pixels
    mask = predict_masks(model, to_model_input(image, info), info.window, pixels)
    if info.config.data.largest_component:
        mask = keep_largest_components(mask, info.data["regions"])
    mask = mask[0].numpy().astype(np.uint8)
    h, w = image.shape[:2]
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"))


def save_prediction(
    out_dir: str | Path,
    stem: str,
    image: np.ndarray,
    mask: np.ndarray,
    class_names: list[str] | None = None,
    regions: dict[str, list[int]] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` (class indices, uint8, the image's size) and
    ``<stem>_overlay.png`` (the image with the classes painted on and, given
    ``class_names``, a legend band below; with nested ``regions``, fundus disc and cup,
    their contours instead)."""
    from fedbcs_lightning.reporting.visualize import overlay, with_legend

    out_dir = Path(out_dir)
    mask_path = _write_png(out_dir / f"{stem}_mask.png", mask)
    picture = overlay(image, mask, regions=regions)
    if class_names:
        picture = with_legend(picture, class_names)
    overlay_path = _write_png(out_dir / f"{stem}_overlay.png", picture)
    return mask_path, overlay_path
