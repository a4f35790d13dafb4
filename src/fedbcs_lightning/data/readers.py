"""Reading image, mask, npy and NIfTI files, with errors that name the file and the fix.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.png"
>>> Image.fromarray(np.zeros((4, 5, 4), np.uint8)).save(path)  # RGBA
>>> read_image(path).shape
(4, 5, 3)
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DataError(ValueError):
    """A data file, folder or data set is unusable; the message names it and the fix."""


#: Environment variable that sets the largest image (in pixels) the readers decode.
PIXEL_LIMIT_VARIABLE = "FEDBCS_MAX_IMAGE_PIXELS"


@functools.cache
def _pil_default_limit() -> int | None:
    """PIL's own limit, read once before :func:`pixel_limit` first changes it."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def pixel_limit() -> int | None:
    """The largest image to decode: ``$FEDBCS_MAX_IMAGE_PIXELS`` (0 = none), else PIL's."""
    default = _pil_default_limit()
    value = os.environ.get(PIXEL_LIMIT_VARIABLE)
    if value is None:
        return default
    if not value.strip().isdigit():
        raise DataError(f"{PIXEL_LIMIT_VARIABLE}={value!r}: expected a whole number of pixels")
    return int(value) or None


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = pixel_limit()
    try:
        image = Image.open(path)
        image.load()  # decode now: a truncated file fails here, not mid-training
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path}: image is larger than the limit of {Image.MAX_IMAGE_PIXELS} pixels that "
            f"guards against decompression bombs ({err}). If the file is trusted, raise the "
            f"limit: {PIXEL_LIMIT_VARIABLE}=<pixels> (0 = no limit)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path}: cannot be read as an image ({err}); re-export the file or remove it"
        ) from None
    return image


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, C)`` uint8; decoded by content (a ``.png`` holding JPEG bytes is fine),
    RGBA and palette images become RGB, greyscale keeps one channel."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("RGBA", "P", "LA", "CMYK", "YCbCr"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if array.max() > 0:
            array = array.astype(np.float64) / array.max() * 255
        array = np.round(array).astype(np.uint8)
    return array[..., None] if array.ndim == 2 else array


def read_mask(path: str | Path) -> np.ndarray:
    """``(H, W)`` integer label image (16-bit kept); colour masks must have equal channels."""
    path = Path(path)
    array = np.asarray(_open(path))
    if array.ndim == 3:
        channels = array[..., :3]
        if not (channels == channels[..., :1]).all():
            raise DataError(
                f"{path}: mask has colour channels that differ; masks must be label images "
                "(one value per class)"
            )
        array = channels[..., 0]
    return array.astype(np.int64)


def read_npy(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as a .npy array ({err})") from None


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Volume data and voxel spacing."""
    import nibabel as nib

    path = Path(path)
    try:
        volume = nib.load(str(path))
        data = np.asarray(volume.dataobj)
    except Exception as err:  # nibabel raises many types for damaged files
        raise DataError(f"{path}: cannot be read as a NIfTI volume ({err})") from None
    return data, tuple(float(z) for z in volume.header.get_zooms())


def map_labels(mask: np.ndarray, mapping: dict[int, int], path: Path) -> np.ndarray:
    """Map raw mask values to classes; any other value is an error naming the file."""
    found = np.unique(mask)
    unexpected = [int(v) for v in found if int(v) not in mapping]
    if unexpected:
        raise DataError(
            f"{path}: unexpected mask values {unexpected[:8]}; expected only "
            f"{sorted(mapping)} ({', '.join(f'{k} -> class {v}' for k, v in mapping.items())})"
        )
    out = np.zeros(mask.shape, np.uint8)
    for value, cls in mapping.items():
        out[mask == value] = cls
    return out


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path):
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{image_path}: image is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} "
            f"is {mask.shape[1]}x{mask.shape[0]}; they must match pixel for pixel"
        )


def pair_by_stem(
    image_dir: Path,
    mask_dir: Path,
    skip_unpaired: bool = False,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
) -> list[tuple[Path, Path]]:
    """Pairs ``image_dir/<stem>.*`` with ``mask_dir/<stem>.*``.

    Unpaired files are an error (listing them), or, with ``skip_unpaired``, a warning.
    """

    def files(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.suffix.lower() not in suffixes or p.name.startswith("."):
                continue
            if p.stem in found:
                raise DataError(
                    f"{found[p.stem]} and {p} have the same name {p.stem!r}; images and masks "
                    "are paired by name, so keep one of them"
                )
            found[p.stem] = p
        return found

    images, masks = files(image_dir), files(mask_dir)
    lonely = [images[s] for s in sorted(set(images) - set(masks))]
    lonely += [masks[s] for s in sorted(set(masks) - set(images))]
    if lonely:
        names = ", ".join(str(p) for p in lonely[:5]) + (" ..." if len(lonely) > 5 else "")
        message = (
            f"{len(lonely)} unpaired file(s): {names}. Every image in {image_dir} needs a mask "
            f"with the same name in {mask_dir}"
        )
        if not skip_unpaired:
            raise DataError(
                f"{message}; rename or remove them, or pass --set data.skip_unpaired=true "
                "to skip them with a warning"
            )
        warnings.warn(f"skipping {message}", stacklevel=2)
    return [(images[s], masks[s]) for s in sorted(set(images) & set(masks))]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` x ``size``: area/linear interpolation for the image, nearest for
    the mask (a smoothing filter would erode thin structures)."""
    import cv2

    h, w = mask.shape
    if (h, w) == (size, size):
        return image, mask
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    out = cv2.resize(image, (size, size), interpolation=interpolation)
    out = out[..., None] if out.ndim == 2 else out
    return out, cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
