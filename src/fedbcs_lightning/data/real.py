"""Public multi-site benchmarks, read in the layouts they are distributed in.

- ``fundus`` (optic disc and cup; Drishti-GS, RIM-ONE-r3, REFUGE train, REFUGE val):
  DoFE PNG, FedDG npy or FedLC npy layouts.
- ``prostate`` (T2 MRI; BIDMC, BMC, HK, I2CVB, RUNMC, UCL): SAML NIfTI volumes (2.5-D
  slices, split by case) or 2-D PNG slices.
- ``nuclei`` and ``sites`` (:mod:`.folders`) use the helpers here too.

Every loader checks each file once and raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedbcs_lightning.data.federated import FederatedData, Site
from fedbcs_lightning.data.readers import (
    IMAGE_SUFFIXES,
    DataError,
    check_same_size,
    map_labels,
    pair_by_stem,
    read_image,
    read_mask,
    read_nifti,
    read_npy,
    resize_pair,
)

PUBLISHED = {
    "fundus": "the DoFE release (github.com/emma-sjwang/Dofe) or the FedDG release "
    "(github.com/liuquande/FedDG-ELCFS)",
    "prostate": "the SAML multi-site prostate set (liuquande.github.io/SAML)",
    "nuclei": "MoNuSeg (monuseg.grand-challenge.org), TNBC (zenodo.org/record/1175282) and "
    "CPM-15, one folder per site",
    "sites": "your own data, one folder per site",
}

LAYOUTS = {
    "fundus": [
        "DoFE: Domain{1..4}/{train,test}/ROIs/{image,mask}/*.png "
        "(mask 0 = cup, 128 = rim, 255 = background)",
        "FedDG npy: client{k}/data_npy/*.npy (H x W x 5: RGB, disc, cup)",
        "FedLC npy: Site{k}/{train,test}/{image,mask}/*.npy (mask 0/1/2 = background/rim/cup)",
    ],
    "prostate": [
        "SAML volumes: <site>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz "
        "(BMC: _Segmentation; labels > 0 = prostate)",
        "2-D slices: <site>/{train,test}/{image,mask}/<case>_<slice>.png "
        "(mask 0 = prostate, 255 = background)",
    ],
    "nuclei": ["<site>/{images,masks}/<stem>.* (masks > 0 = nucleus)"],
    "sites": ["<site>/{images,masks}/<stem>.* (masks > 0 = foreground, or data.label_values)"],
}


def data_root(config, name: str) -> Path:
    """``data.root``, else ``$FEDBCS_DATA/<name>``; a clear error when neither exists."""
    looked = []
    if config.data.root:
        root = Path(config.data.root).expanduser()
        if root.is_dir():
            return root
        looked.append(f"--data-root {root} (not a folder)")
    else:
        looked.append("--data-root (not given)")
    env = os.environ.get("FEDBCS_DATA")
    if env:
        root = Path(env).expanduser() / name
        if root.is_dir() and not config.data.root:
            return root
        looked.append(f"$FEDBCS_DATA/{name} = {root} (not a folder)")
    else:
        looked.append("$FEDBCS_DATA (not set)")
    layouts = "\n  ".join(LAYOUTS[name])
    raise DataError(
        f"no {name} data found. Looked at: {'; '.join(looked)}.\n"
        f"Expected layout under the root:\n  {layouts}\n"
        f"The public data set: {PUBLISHED[name]}."
    )


def unrecognised(name: str, root: Path) -> DataError:
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    layouts = "\n  ".join(LAYOUTS[name])
    return DataError(
        f"{root}: unrecognised {name} layout. Expected one of:\n  {layouts}\n"
        f"Found: {', '.join(found) or 'an empty folder'}"
    )


def no_strays(name: str, root: Path, folders: list[Path], sites: list[Path]) -> None:
    """Every (non-hidden) folder at the root must be a site of the layout found."""
    strays = [f for f in folders if f not in sites]
    if strays:
        layouts = "\n  ".join(LAYOUTS[name])
        raise DataError(
            f"{root}: folder(s) {', '.join(f.name + '/' for f in strays)} do not fit the "
            f"{name} layout of the other folders:\n  {layouts}\n"
            "Move them out of the data folder (hidden folders, starting with '.', are skipped)"
        )


def site_from_pairs(
    name: str,
    pairs,
    load: Callable,
    size: int | None,
    test_stems: set[str] = frozenset(),
    group_of=None,
) -> Site:
    if not pairs:
        raise DataError(f"site {name!r} has no image/mask pairs")
    images, masks, sources, groups, fixed_test = [], [], [], [], []
    for i, (image_path, mask_path) in enumerate(pairs):
        image, mask = load(image_path, mask_path)
        check_same_size(image, mask, image_path, mask_path)
        if size:
            image, mask = resize_pair(image, mask, size)
        images.append(image)
        masks.append(mask)
        sources += [str(image_path), str(mask_path)]
        groups.append(group_of(image_path) if group_of else str(i))
        if (image_path.parent, image_path.stem) in test_stems:
            fixed_test.append(i)
    check_channels(name, images, [image_path for image_path, _ in pairs])
    stacked = size is not None
    return Site(
        name,
        np.stack(images) if stacked else images,
        np.stack(masks) if stacked else masks,
        groups=groups if group_of else None,
        fixed_test=fixed_test if test_stems else None,
        sources=sources,
    )


def check_channels(site: str, images: list[np.ndarray], paths: list[Path]) -> None:
    """Every image of a site has the same channel count; name those that differ."""
    counts = [image.shape[-1] for image in images]
    usual = max(set(counts), key=counts.count)
    odd = [(path, n) for path, n in zip(paths, counts, strict=True) if n != usual]
    if odd:
        shown = ", ".join(f"{path} ({n} channel{'s' * (n > 1)})" for path, n in odd[:5])
        raise DataError(
            f"site {site!r}: {len(odd)} of {len(images)} images do not have the {usual} "
            f"channels of the others: {shown}; convert them (e.g. grey to RGB) or remove them"
        )


def site_folders_of(root: Path) -> list[Path]:
    """The folders directly inside ``root``, without hidden ones (``.ipynb_checkpoints``)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _train_test_pairs(folder: Path, config, suffixes=IMAGE_SUFFIXES, sub: str = ""):
    """Pairs of ``folder/{train,test}[/sub]/{image,mask}`` and the test split's members."""
    pairs, test = [], set()
    for split in ("train", "test"):
        base = folder / split / sub if sub else folder / split
        if not base.is_dir():
            continue
        split_pairs = pair_by_stem(
            base / "image", base / "mask", config.data.skip_unpaired, suffixes=suffixes
        )
        pairs += split_pairs
        if split == "test":
            test |= {(p.parent, p.stem) for p, _ in split_pairs}
    return pairs, test


# ---------------------------------------------------------------- fundus

FUNDUS_CLASSES = ["background", "disc rim", "cup"]
FUNDUS_REGIONS = {"disc": [1, 2], "cup": [2]}
FUNDUS_SITES = ["Drishti-GS", "RIM-ONE-r3", "REFUGE-train", "REFUGE-val"]


def fundus_site_name(folder: Path) -> str:
    """The source of a fundus folder, by its number (``Domain3``, ``client3``, ``Site3``:
    REFUGE-train; the four releases number the same sources 1 to 4), whichever of them a
    user holds; a folder without such a number keeps its own name."""
    found = re.search(r"(\d+)$", folder.name)
    number = int(found.group(1)) if found else 0
    return FUNDUS_SITES[number - 1] if 1 <= number <= len(FUNDUS_SITES) else folder.name


def _fundus_dofe(root: Path, config) -> list[Site]:
    domains = sorted(p for p in root.iterdir() if re.fullmatch(r"Domain\d+", p.name))
    sites = []
    for domain in domains:
        pairs, test = _train_test_pairs(domain, config, sub="ROIs")

        def load(image_path, mask_path):
            mask = map_labels(read_mask(mask_path), {255: 0, 128: 1, 0: 2}, mask_path)
            return read_image(image_path)[..., :3], mask

        name = fundus_site_name(domain)
        sites.append(site_from_pairs(name, pairs, load, config.data.image_size, test))
    return sites


def _fundus_feddg(root: Path, config) -> list[Site]:
    clients = sorted(p for p in root.iterdir() if re.fullmatch(r"client\d+", p.name))
    sites = []
    for client in clients:
        files = sorted((client / "data_npy").glob("*.npy"))

        def load(path, _):
            array = read_npy(path)
            if array.ndim != 3 or array.shape[-1] != 5:
                raise DataError(
                    f"{path}: expected an H x W x 5 array (RGB, disc, cup), got shape {array.shape}"
                )
            rgb = array[..., :3]
            if rgb.max() <= 1.0:
                rgb = rgb * 255
            disc, cup = (
                array[..., 3] > 0.5 * array[..., 3].max(),
                array[..., 4] > 0.5 * array[..., 4].max(),
            )
            label = np.zeros(disc.shape, np.uint8)
            label[disc] = 1
            label[cup] = 2
            return np.clip(np.round(rgb), 0, 255).astype(np.uint8), label

        name = fundus_site_name(client)
        sites.append(site_from_pairs(name, [(f, f) for f in files], load, config.data.image_size))
    return sites


def _fundus_fedlc(root: Path, config) -> list[Site]:
    folders = sorted(p for p in root.iterdir() if re.fullmatch(r"Site\d+", p.name))
    sites = []
    for folder in folders:
        pairs, test = _train_test_pairs(folder, config, suffixes=(".npy",))

        def load(image_path, mask_path):
            image = read_npy(image_path)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise DataError(f"{image_path}: expected an H x W x 3 image, got {image.shape}")
            if image.max() <= 1.0:
                image = image * 255
            mask = map_labels(read_npy(mask_path).astype(np.int64), {0: 0, 1: 1, 2: 2}, mask_path)
            return np.clip(np.round(image), 0, 255).astype(np.uint8), mask

        name = fundus_site_name(folder)
        sites.append(site_from_pairs(name, pairs, load, config.data.image_size, test))
    return sites


def fundus(config) -> FederatedData:
    """Optic disc and cup, 4 sites; Dice reported for disc (rim + cup) and cup."""
    root = data_root(config, "fundus")
    names = {p.name for p in root.iterdir()}
    if any(re.fullmatch(r"Domain\d+", n) for n in names):
        sites = _fundus_dofe(root, config)
    elif any(re.fullmatch(r"client\d+", n) for n in names):
        sites = _fundus_feddg(root, config)
    elif any(re.fullmatch(r"Site\d+", n) for n in names):
        sites = _fundus_fedlc(root, config)
    else:
        raise unrecognised("fundus", root)
    return FederatedData("fundus", sites, FUNDUS_CLASSES, FUNDUS_REGIONS)


# ---------------------------------------------------------------- prostate

PROSTATE_SITES = ["BIDMC", "BMC", "HK", "I2CVB", "RUNMC", "UCL"]


def _normalise_volume(volume: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """Clip to the ``percentiles`` of the volume's values and scale to ``0..255``."""
    low, high = np.percentile(volume, percentiles)
    scaled = (np.clip(volume, low, high) - low) / max(high - low, 1e-8)
    return np.round(scaled * 255).astype(np.uint8)


def _prostate_volumes(root: Path, config) -> list[Site]:
    sites = []
    for folder in site_folders_of(root):
        cases = sorted(
            p
            for p in folder.glob("*.nii*")
            if not re.search(r"_segmentation", p.name, re.IGNORECASE)
        )
        if not cases:
            raise DataError(f"site {folder}: no CaseNN.nii.gz volumes")
        images, masks, groups, sources = [], [], [], []
        for case in cases:
            stem = case.name.split(".")[0]
            candidates = [case.with_name(f"{stem}_segmentation{s}") for s in (".nii.gz", ".nii")]
            candidates += [case.with_name(f"{stem}_Segmentation{s}") for s in (".nii.gz", ".nii")]
            seg = next((c for c in candidates if c.is_file()), None)
            if seg is None:
                raise DataError(
                    f"{case}: no segmentation {stem}_segmentation.nii.gz (or _Segmentation) "
                    "beside it; add it, or remove the volume"
                )
            volume, _ = read_nifti(case)
            label, _ = read_nifti(seg)
            if volume.shape != label.shape or volume.ndim != 3:
                raise DataError(
                    f"{case}: volume shape {volume.shape} and segmentation {seg} shape "
                    f"{label.shape} must be equal and 3-D"
                )
            volume = _normalise_volume(volume.astype(np.float64), config.data.volume_clip)
            label = (label > 0).astype(np.uint8)
            depth = volume.shape[2]
            edge = 0 if config.data.edge_slices or depth < 3 else 1
            for z in range(edge, depth - edge):
                neighbours = [max(z - 1, 0), z, min(z + 1, depth - 1)]
                image = np.stack([volume[:, :, i] for i in neighbours], axis=-1)
                image, mask = resize_pair(image, label[:, :, z], config.data.image_size)
                images.append(image)
                masks.append(mask)
                groups.append(stem)
            sources += [str(case), str(seg)]
        sites.append(
            Site(folder.name, np.stack(images), np.stack(masks), groups=groups, sources=sources)
        )
    return sites


def _prostate_slices(root: Path, config) -> list[Site]:
    sites = []
    for folder in site_folders_of(root):
        pairs, test = _train_test_pairs(folder, config)

        def load(image_path, mask_path):
            mask = map_labels(read_mask(mask_path), {255: 0, 0: 1}, mask_path)
            return read_image(image_path)[..., :1], mask

        def case_of(path: Path) -> str:
            return path.stem.rsplit("_", 1)[0]

        sites.append(
            site_from_pairs(
                folder.name, pairs, load, config.data.image_size, test, group_of=case_of
            )
        )
    return sites


def prostate(config) -> FederatedData:
    """Prostate T2 MRI, 6 sites; volumes become 2.5-D slices, split by case."""
    root = data_root(config, "prostate")
    folders = site_folders_of(root)
    volumes = [f for f in folders if list(f.glob("*.nii*"))]
    slices = [
        f for f in folders if (f / "train" / "image").is_dir() or (f / "test" / "image").is_dir()
    ]
    if volumes and len(volumes) >= len(slices):
        no_strays("prostate", root, folders, volumes)
        sites = _prostate_volumes(root, config)
    elif slices:
        no_strays("prostate", root, folders, slices)
        sites = _prostate_slices(root, config)
    else:
        raise unrecognised("prostate", root)
    return FederatedData(
        "prostate",
        sites,
        ["background", "prostate"],
        train_foreground_only=True,
        case_dice=True,
    )
