"""Data sets of site folders: ``<root>/<site>/{images,masks}/<stem>.*`` pairs.

``nuclei`` (H&E nuclei) and ``sites`` (any such folder). Images keep their native size:
random crops for training, whole images for evaluation. ``data.label_values`` maps mask
values to classes (default: > 0 = foreground); ``data.group_pattern`` names the patient
or slide of each file, whose images share a split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedbcs_lightning.data.federated import FederatedData
from fedbcs_lightning.data.readers import DataError, map_labels, pair_by_stem, read_image, read_mask
from fedbcs_lightning.data.real import (
    data_root,
    no_strays,
    site_folders_of,
    site_from_pairs,
    unrecognised,
)


def _site_folders(name: str, config) -> FederatedData:
    root = data_root(config, name)
    folders = site_folders_of(root)
    sites_found = [f for f in folders if (f / "images").is_dir() and (f / "masks").is_dir()]
    if not sites_found:
        raise unrecognised(name, root)
    no_strays(name, root, folders, sites_found)
    values = config.data.label_values
    mapping = {v: i + 1 for i, v in enumerate(values)} if values else None
    sites = []
    for folder in folders:
        pairs = pair_by_stem(folder / "images", folder / "masks", config.data.skip_unpaired)

        def load(image_path, mask_path):
            raw = read_mask(mask_path)
            if mapping is None:
                mask = (raw > 0).astype(np.uint8)
            else:
                mask = map_labels(raw, {0: 0, **mapping}, mask_path)
            return read_image(image_path), mask

        group_of = _group_of(config.data.group_pattern)
        sites.append(site_from_pairs(folder.name, pairs, load, size=None, group_of=group_of))
    classes = ["background"] + ([f"class {v}" for v in values] if values else ["foreground"])
    if name == "nuclei":
        classes = ["background", "nucleus"]
    return FederatedData(name, sites, classes, whole_images=True)


def _group_of(pattern: str | None) -> Callable[[Path], str] | None:
    """The patient or slide of an image file: group 1 of ``data.group_pattern`` matched on
    its stem (images of one group always share a split); ``None`` without a pattern."""
    if pattern is None:
        return None
    compiled = re.compile(pattern)

    def group_of(path: Path) -> str:
        match = compiled.search(path.stem)
        if match is None or match.group(1) is None:
            raise DataError(
                f"{path}: its name does not match data.group_pattern {pattern!r}, so its "
                "patient or slide is unknown; fix the pattern or the file name"
            )
        return match.group(1)

    return group_of


def nuclei(config) -> FederatedData:
    """H&E nuclei, one folder per site; native resolution, crops and sliding windows."""
    return _site_folders("nuclei", config)


def site_folders(config) -> FederatedData:
    """Any ``<root>/<site>/{images,masks}`` folder of sites."""
    return _site_folders("sites", config)
