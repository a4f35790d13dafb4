"""HDF5 cache of a validated data set (``fedbcs prepare``).

Layout: one group per site, holding ``images``/``masks`` (stacked, chunked per image and
compressed) or ``images/<i>``/``masks/<i>`` for images of varied size, and ``groups`` and
``fixed_test`` where the data set has them. The root's ``manifest`` attribute (JSON) holds
the data set's description, counts per site, the image size it was prepared at and the
SHA-256 of every source file. Files are written to a temporary name and renamed, so an
interrupted prepare leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedbcs_lightning.data.federated import FederatedData, Site
from fedbcs_lightning.data.readers import DataError, sha256
from fedbcs_lightning.io import atomic_write_path, remove_stale_temporaries

FORMAT = 2  # 2: the manifest says whether Dice is scored per case


def manifest_of(data: FederatedData, image_size: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": data.name,
        "class_names": data.class_names,
        "regions": data.regions,
        "whole_images": data.whole_images,
        "train_foreground_only": data.train_foreground_only,
        "case_dice": data.case_dice,
        "image_size": image_size,
        "sites": {
            site.name: {
                "images": len(site),
                "sources": {src: sha256(Path(src)) for src in site.sources},
            }
            for site in data.sites
        },
    }


def write_cache(data: FederatedData, path: str | Path, image_size: int) -> dict[str, Any]:
    """Write ``data`` to ``path`` atomically; returns the manifest."""
    import h5py

    manifest = manifest_of(data, image_size)

    def write(temporary: Path) -> None:
        # HDF5 crashes the process when a write finds the disk full, so each array is
        # written only where the disk has room for it uncompressed (an upper bound)
        with h5py.File(temporary, "w") as f:
            f.attrs["manifest"] = json.dumps(manifest)
            for site in data.sites:
                group = f.create_group(site.name)
                if isinstance(site.images, np.ndarray):
                    for key, array in (("images", site.images), ("masks", site.masks)):
                        _room_for(temporary, array.nbytes)
                        group.create_dataset(
                            key, data=array, compression="gzip", chunks=(1, *array.shape[1:])
                        )
                else:
                    for key, arrays in (("images", site.images), ("masks", site.masks)):
                        sub = group.create_group(key)
                        for i, array in enumerate(arrays):
                            _room_for(temporary, array.nbytes)
                            sub.create_dataset(f"{i:06d}", data=array, compression="gzip")
                if site.groups is not None:
                    group.create_dataset("groups", data=np.array(site.groups, dtype="S"))
                if site.fixed_test is not None:
                    group.create_dataset("fixed_test", data=np.array(site.fixed_test, np.int64))

    path = Path(path)
    remove_stale_temporaries(path.parent, path.name)  # left by a killed earlier prepare
    atomic_write_path(path, write)
    return manifest


#: Room kept free beyond an array's size: HDF5's metadata, written when the file closes.
METADATA_ROOM = 1 << 20


def _room_for(path: Path, nbytes: int) -> None:
    """Raise a full-disk ``OSError`` before writing ``nbytes`` where they do not fit."""
    import errno
    import shutil

    if shutil.disk_usage(path.parent).free < nbytes + METADATA_ROOM:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))


def read_cache(
    path: str | Path, name: str | None = None, image_size: int | None = None
) -> FederatedData:
    """Load a cache; ``name`` and ``image_size``, when given, must match what it holds."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cache file does not exist; write it with `fedbcs prepare`")
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
            sites = []
            for site_name in manifest["sites"]:
                group = f[site_name]
                if isinstance(group["images"], h5py.Dataset):
                    images, masks = group["images"][()], group["masks"][()]
                else:
                    images = [group["images"][k][()] for k in sorted(group["images"])]
                    masks = [group["masks"][k][()] for k in sorted(group["masks"])]
                groups = [g.decode() for g in group["groups"][()]] if "groups" in group else None
                fixed = group["fixed_test"][()].tolist() if "fixed_test" in group else None
                sites.append(
                    Site(
                        site_name,
                        images,
                        masks,
                        groups,
                        fixed,
                        list(manifest["sites"][site_name]["sources"]),
                    )
                )
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path}: not a readable fedbcs cache ({err}); re-run `fedbcs prepare`"
        ) from None
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{path}: cache format {manifest.get('format')}, this version reads format "
            f"{FORMAT}; re-run `fedbcs prepare`"
        )
    if name is not None and manifest["name"] != name:
        raise DataError(f"{path}: cache holds data set {manifest['name']!r}, not {name!r}")
    if (
        image_size is not None
        and not manifest["whole_images"]
        and manifest["image_size"] != image_size
    ):
        raise DataError(
            f"{path}: cache was prepared at image size {manifest['image_size']}, not "
            f"{image_size}; re-run `fedbcs prepare --image-size {image_size}`"
        )
    return FederatedData(
        manifest["name"],
        sites,
        manifest["class_names"],
        {k: list(v) for k, v in manifest["regions"].items()},
        whole_images=manifest["whole_images"],
        train_foreground_only=manifest["train_foreground_only"],
        case_dice=manifest["case_dice"],
    )
