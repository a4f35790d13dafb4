"""Evaluation: the one function that scores a model on images, used everywhere.

Dice is computed per image and region and averaged over the site's images; a region
absent from both prediction and ground truth scores 1. Where images are slices of
volumes (prostate), Dice is computed per case over all of its slices' pixels (3-D Dice)
and averaged over the cases, as the field reports it. The surface metrics come from
MONAI, in pixels, and are averaged over images where both prediction and ground truth
contain the region: HD95 (95th-percentile symmetric Hausdorff distance) and ASSD (average
symmetric surface distance: the mean, over the boundary pixels of both masks, of the
distance to the other mask's boundary).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch


def overlap_per_image(
    pred: torch.Tensor, target: torch.Tensor, labels: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of region ``labels`` in both prediction and target, and in each of them
    summed (``|P| + |T|``), for each image of a batch of label maps ``(B, H, W)``."""
    values = torch.tensor(labels, device=pred.device)
    p = torch.isin(pred, values).flatten(1)
    t = torch.isin(target, values).flatten(1)
    return (p & t).sum(1).double(), (p.sum(1) + t.sum(1)).double()


def dice_from_overlap(inter: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Dice ``2 |P & T| / (|P| + |T|)``; 1 where the region is absent from both."""
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def dice_per_image(pred: torch.Tensor, target: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Dice of region ``labels`` for each image of a batch of label maps ``(B, H, W)``."""
    return dice_from_overlap(*overlap_per_image(pred, target, labels))


def dice_per_case(
    inter: Sequence[float], total: Sequence[float], cases: Sequence[str]
) -> list[float]:
    """Dice of each case (a patient's volume) over the pixels of all its images, from
    their per-image overlaps, in order of first appearance.

    >>> dice_per_case([1, 0, 3], [2, 4, 6], ["a", "a", "b"])  # a: 2*1/6, b: 2*3/6
    [0.3333333333333333, 1.0]
    """
    sums: dict[str, list[float]] = {}
    for i, t, case in zip(inter, total, cases, strict=True):
        acc = sums.setdefault(case, [0.0, 0.0])
        acc[0] += i
        acc[1] += t
    return [2 * i / t if t > 0 else 1.0 for i, t in sums.values()]


def _surface_per_image(
    pred: torch.Tensor,
    target: torch.Tensor,
    labels: list[int],
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> list[float]:
    """``distance(pred, target)`` on ``(1, 1, H, W)`` region masks, per image of a batch
    (NaN where prediction or ground truth lacks the region)."""
    values = torch.tensor(labels, device=pred.device)
    p = torch.isin(pred, values)
    t = torch.isin(target, values)
    out = []
    for pi, ti in zip(p, t, strict=True):
        if not pi.any() or not ti.any():
            out.append(math.nan)
            continue
        with warnings.catch_warnings():  # MONAI's own deprecation notices, not ours
            warnings.simplefilter("ignore", FutureWarning)
            d = distance(pi[None, None].float(), ti[None, None].float())
        out.append(float(d.item()))
    return out


def _monai_metrics():
    """``monai.metrics``, imported without MONAI's own deprecation notices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from monai import metrics

    return metrics


def hd95_per_image(pred: torch.Tensor, target: torch.Tensor, labels: list[int]) -> list[float]:
    """HD95 per image (NaN where prediction or ground truth lacks the region)."""
    compute = _monai_metrics().compute_hausdorff_distance
    return _surface_per_image(
        pred,
        target,
        labels,
        lambda p, t: compute(p, t, include_background=True, percentile=95),
    )


def assd_per_image(pred: torch.Tensor, target: torch.Tensor, labels: list[int]) -> list[float]:
    """Average symmetric surface distance per image, in pixels (NaN where prediction or
    ground truth lacks the region).

    >>> target = torch.zeros(1, 8, 8, dtype=torch.long); target[0, 2:6, 2] = 1
    >>> assd_per_image(torch.roll(target, 3, dims=2), target, [1])
    [3.0]
    """
    compute = _monai_metrics().compute_average_surface_distance
    return _surface_per_image(
        pred,
        target,
        labels,
        lambda p, t: compute(p, t, include_background=True, symmetric=True),
    )


#: Surface metrics reported by :func:`evaluate` with ``surface_metrics=True``.
SURFACE_METRICS = {"hd95": hd95_per_image, "assd": assd_per_image}


def vertical_diameter(mask: torch.Tensor) -> torch.Tensor:
    """Height in rows of the region of each image of ``(B, H, W)`` boolean masks: from its
    top row to its bottom row (0 for an empty region)."""
    rows = mask.any(dim=2)
    height = rows.shape[1]
    index = torch.arange(height, device=mask.device).expand_as(rows)
    top = torch.where(rows, index, height).min(dim=1).values
    bottom = torch.where(rows, index, -1).max(dim=1).values
    return (bottom - top + 1).clamp(min=0)


def vertical_cdr(pred: torch.Tensor, disc: list[int], cup: list[int]) -> torch.Tensor:
    """The vertical cup-to-disc ratio of each label map of ``(B, H, W)``: the cup's
    vertical diameter over the disc's (0 where no disc is found), the quantity glaucoma
    screening reads and the REFUGE challenge ranks on.

    >>> m = torch.zeros(1, 10, 10, dtype=torch.long)
    >>> m[0, 1:9, 2:8] = 1; m[0, 3:7, 3:6] = 2  # disc rows 1-8, cup rows 3-6
    >>> vertical_cdr(m, [1, 2], [2]).tolist()
    [0.5]
    """
    disc_height = vertical_diameter(torch.isin(pred, torch.tensor(disc, device=pred.device)))
    cup_height = vertical_diameter(torch.isin(pred, torch.tensor(cup, device=pred.device)))
    return torch.where(
        disc_height > 0, cup_height / disc_height.clamp(min=1), torch.zeros_like(cup_height)
    ).double()


def keep_largest_components(pred: torch.Tensor, regions: Mapping[str, list[int]]) -> torch.Tensor:
    """Label maps ``(B, H, W)`` with each region reduced to its largest connected component
    (8-connectivity). Enclosing regions go first (fundus: the disc, then the cup inside
    it); pixels removed from a region take the label of the region around it (a stray cup
    becomes rim), or background.

    >>> m = torch.zeros(1, 10, 10, dtype=torch.long)
    >>> m[0, 1:7, 1:7] = 1; m[0, 2:4, 2:4] = 2; m[0, 9, 9] = 1; m[0, 5, 5] = 2
    >>> out = keep_largest_components(m, {"disc": [1, 2], "cup": [2]})
    >>> int(out[0, 9, 9]), int(out[0, 5, 5]), int(out[0, 2, 2])  # stray disc, stray cup, cup
    (0, 1, 2)
    """
    from scipy import ndimage

    out = pred.clone()
    ordered = sorted(regions.values(), key=len, reverse=True)
    structure = np.ones((3, 3), dtype=bool)
    for labels in ordered:
        around = [r for r in ordered if set(labels) < set(r)]
        fill = min(set(around[-1]) - set(labels)) if around else 0
        values = torch.tensor(labels)
        for image in out:
            mask = torch.isin(image, values).numpy()
            components, count = ndimage.label(mask, structure=structure)
            if count <= 1:
                continue
            largest = np.bincount(components.ravel())[1:].argmax() + 1
            image[torch.from_numpy(mask & (components != largest))] = fill
    return out


#: The regions whose vertical cup-to-disc ratio error :func:`evaluate` reports.
CDR_REGIONS = ("disc", "cup")


#: Largest image (pixels) segmented in one forward pass by default; larger ones are tiled.
WHOLE_IMAGE_PIXELS = 4_194_304  # 2048 x 2048


def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    window: int | None,
    whole_image_pixels: int = WHOLE_IMAGE_PIXELS,
) -> torch.Tensor:
    """Logits for a batch of images of any size.

    Without ``window`` the batch goes through the model as it is. With ``window`` (data
    sets of whole images, trained on ``window``-sized crops) each image is segmented in
    one forward pass, zero-padded to the model's ``input_divisor`` and cropped back, when
    the model is fully convolutional with fixed normalisation statistics and the image
    has at most ``whole_image_pixels`` pixels; otherwise with overlapping ``window`` x
    ``window`` tiles (MONAI's sliding windows, Gaussian blending): for BatchNorm that
    normalises with each batch's own statistics (the reference's), whose output depends
    on what else is in the batch, and for images too large for memory.
    """
    if window is None:
        return model(images)
    height, width = images.shape[-2:]
    if 0 < height * width <= whole_image_pixels and whole_image_ready(model):
        divisor = int(getattr(model, "input_divisor", 1))
        pad_h, pad_w = -height % divisor, -width % divisor
        padded = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h))
        return model(padded)[..., :height, :width]
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        images, (window, window), sw_batch_size=4, predictor=model, overlap=0.25, mode="gaussian"
    )


def whole_image_ready(model: torch.nn.Module) -> bool:
    """Whether ``model`` may segment a whole image in one pass: no normalisation layer
    that uses the batch's own statistics at evaluation (BatchNorm without running
    statistics) and no layer that takes the training size only (``fixed_input_size``,
    e.g. HarmoFL's amplitude normalisation); other models see windows of the training
    size, as in training."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return not any(
        (isinstance(m, _BatchNorm) and not m.track_running_stats)
        or getattr(m, "fixed_input_size", False)
        for m in model.modules()
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    regions: Mapping[str, list[int]],
    surface_metrics: bool = False,
    device: torch.device | str | None = None,
    window: int | None = None,
    whole_image_pixels: int = WHOLE_IMAGE_PIXELS,
    cases: Sequence[str] | None = None,
    largest_component: bool = False,
) -> dict[str, float]:
    """Score ``model`` on ``(image, mask)`` batches (with ``largest_component``, each
    predicted region reduced to its largest connected component first:
    :func:`keep_largest_components`).

    Returns ``dice/<region>`` per region, ``dice`` (their mean) and, with
    ``surface_metrics``, ``hd95/<region>``, ``hd95``, ``assd/<region>`` and ``assd`` (each
    the mean over the regions where it is defined), and, for data sets with ``disc`` and
    ``cup`` regions (fundus), ``vcdr_error``: the mean over images of the absolute error of
    the vertical cup-to-disc ratio (:func:`vertical_cdr`). With ``window``, whole images of
    any size are scored, each in one padded pass or with sliding windows of that size
    (:func:`predict_logits` says which). With ``cases`` (the case of each image, in the
    order the batches hold them) Dice is that of each case over all its images' pixels,
    averaged over cases; surface metrics stay per image.

    Examples
    --------
    >>> import torch
    >>> class Oracle(torch.nn.Module):
    ...     def forward(self, x):  # predicts class 1 where the first channel is bright
    ...         return torch.cat([0.5 - x[:, :1], x[:, :1] - 0.5], 1)
    >>> x = torch.zeros(1, 1, 8, 8); x[..., :4] = 1.0
    >>> y = (x[:, 0] > 0.5).long()
    >>> evaluate(Oracle(), [(x, y)], {"thing": [1]})["dice"]
    1.0
    """
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    overlaps: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in regions}
    surface = {metric: {name: [] for name in regions} for metric in SURFACE_METRICS}
    cdr = surface_metrics and all(name in regions for name in CDR_REGIONS)
    cdr_errors: list[float] = []
    try:
        for images, masks in batches:
            logits = predict_logits(model, images.to(device), window, whole_image_pixels)
            pred = logits.argmax(1).cpu()
            if largest_component:
                pred = keep_largest_components(pred, regions)
            for name, labels in regions.items():
                inter, total = overlap_per_image(pred, masks, labels)
                overlaps[name][0].extend(inter.tolist())
                overlaps[name][1].extend(total.tolist())
                if surface_metrics:
                    for metric, per_image in SURFACE_METRICS.items():
                        surface[metric][name].extend(per_image(pred, masks, labels))
            if cdr:
                disc, cup = (list(regions[name]) for name in CDR_REGIONS)
                error = vertical_cdr(pred, disc, cup) - vertical_cdr(masks.cpu(), disc, cup)
                cdr_errors.extend(error.abs().tolist())
    finally:
        model.train(was_training)
    scores = {}
    for name, (inter, total) in overlaps.items():
        if cases is None:
            dice = dice_from_overlap(
                torch.tensor(inter, dtype=torch.float64), torch.tensor(total, dtype=torch.float64)
            ).tolist()
        else:
            dice = dice_per_case(inter, total, cases)
        scores[f"dice/{name}"] = float(np.mean(dice))
    scores["dice"] = float(np.mean([scores[f"dice/{n}"] for n in regions]))
    if surface_metrics:
        for metric, per_region in surface.items():
            for name, values in per_region.items():
                scores[f"{metric}/{name}"] = _finite_mean(values)
            scores[metric] = _finite_mean([scores[f"{metric}/{n}"] for n in regions])
    if cdr:
        scores["vcdr_error"] = _finite_mean(cdr_errors)
    return scores


def _finite_mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def mean_over_sites(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over sites (NaNs ignored)."""
    keys = next(iter(per_site.values())).keys()
    out = {}
    for key in keys:
        values = [site[key] for site in per_site.values() if math.isfinite(site[key])]
        out[key] = float(np.mean(values)) if values else math.nan
    return out
