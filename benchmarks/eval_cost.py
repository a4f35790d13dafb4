"""Evaluation cost on whole-image data sets: one padded pass per image vs sliding windows.

Each site's client trains ``--epochs`` local epochs (the last one timed: a round's local
training), then its validation images are scored with sliding windows of the crop size
(``run.whole_image_pixels=0``, the former default) and in one padded pass per image (the
default now); the table gives both times, validation's share of a round (one epoch of
training + one validation) and both Dice scores, and the time to predict the site's
largest image. Timings are medians of ``--repeats``.

    python benchmarks/eval_cost.py --data-root ../shared/datasets/nuclei   # 96x96 crops
    python benchmarks/eval_cost.py --quick    # a generated 3-site folder, 32x32 crops
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit, markdown_table, parser

from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.evaluation.metrics import evaluate, predict_logits
from fedbcs_lightning.federation.build import build_clients
from fedbcs_lightning.methods import Instruction, create_strategy


def generated_sites(root: Path) -> Path:
    """Three sites of six images of varied size, blobs on noise (for --quick)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for s in range(3):
        for kind in ("images", "masks"):
            (root / f"site{s}" / kind).mkdir(parents=True)
        for i in range(6):
            h, w = int(rng.integers(120, 200)), int(rng.integers(120, 200))
            yy, xx = np.mgrid[:h, :w]
            mask = np.zeros((h, w), bool)
            for _ in range(8):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 15)
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            image = rng.integers(0, 80, (h, w, 3)) + mask[..., None] * (120 + 40 * s)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / f"site{s}" / "images" / f"{i}.png"
            )
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / f"site{s}" / "masks" / f"{i}.png"
            )
    return root


def timed(function, repeats: int) -> tuple[float, object]:
    """Median time of ``repeats`` calls after one untimed warm-up call, and the result."""
    function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=None, help="nuclei-style site folders")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    size = args.image_size or (32 if args.quick else 96)
    epochs = args.epochs or (1 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    seed = (args.seeds or [0])[0]
    if args.data_root is None:
        if not args.quick:
            p.error("give --data-root (site folders, e.g. ../shared/datasets/nuclei) or --quick")
        args.data_root = generated_sites(Path(tempfile.mkdtemp(prefix="eval-cost-")))
    name = "sites" if args.quick else "nuclei"
    config = resolve(
        options={
            "data": {"name": name, "root": str(args.data_root), "image_size": size},
            "model": {"width": 4 if args.quick else args.width},
            "run": {"seed": seed},
        }
    )
    torch.manual_seed(seed)
    data = load_dataset(config)
    splits = make_splits(data, config.data.val_fraction, config.data.test_fraction, seed)
    strategy = create_strategy(config)
    clients = build_clients(config, data, splits, strategy)
    weights = clients[0].get_weights()
    rows, result = [], {"image_size": size, "epochs": epochs, "repeats": repeats, "sites": {}}
    for client, site in zip(clients, data.sites, strict=True):
        client.load(Instruction(weights))
        for _ in range(epochs - 1):  # local training, each epoch from the last one's weights
            client.fit(Instruction(client.get_weights()))
        start = time.perf_counter()
        client.fit(Instruction(client.get_weights()))  # one round's local training
        train_s = time.perf_counter() - start
        model, loader = client.module.backbone, client.loaders["val"]

        def validate(pixels, m=model, v=loader):
            return evaluate(m, v, data.regions, window=size, whole_image_pixels=pixels)

        windows_s, windows = timed(lambda: validate(0), repeats)
        whole_s, whole = timed(lambda: validate(config.run.whole_image_pixels), repeats)
        largest = max(site.images, key=lambda im: im.shape[0] * im.shape[1])
        pixels = np.ascontiguousarray(largest.transpose(2, 0, 1))
        image = torch.from_numpy(pixels).float()[None] / 255
        model.eval()

        def predict(pixels, m=model, x=image):
            return predict_logits(m, x, size, pixels)

        with torch.no_grad():
            predict_windows, _ = timed(lambda: predict(0), repeats)
            predict_whole, _ = timed(lambda: predict(config.run.whole_image_pixels), repeats)
        h, w = image.shape[-2:]
        share = (windows_s / (train_s + windows_s), whole_s / (train_s + whole_s))
        result["sites"][site.name] = {
            "train_epoch_s": train_s,
            "val_windows_s": windows_s,
            "val_whole_s": whole_s,
            "val_share_windows": share[0],
            "val_share_whole": share[1],
            "dice_windows": windows["dice"],
            "dice_whole": whole["dice"],
            "predict_size": [int(h), int(w)],
            "predict_windows_s": predict_windows,
            "predict_whole_s": predict_whole,
        }
        rows.append(
            [
                site.name,
                len(splits[site.name]["val"]),
                f"{train_s:.1f}",
                f"{windows_s:.2f}",
                f"{whole_s:.2f}",
                f"{share[0]:.0%} -> {share[1]:.0%}",
                f"{windows['dice']:.4f}",
                f"{whole['dice']:.4f}",
                f"{w}x{h}: {predict_windows:.2f} -> {predict_whole:.2f}",
            ]
        )
    headers = [
        "site",
        "val images",
        "train epoch (s)",
        "val, windows (s)",
        "val, one pass (s)",
        "val share of a round",
        "Dice, windows",
        "Dice, one pass",
        "predict largest image (s)",
    ]
    header = (
        f"{name}, {size}x{size} crops, U-Net width {config.model.width}, after {epochs} local "
        f"epoch(s), seed {seed}; medians of {repeats}; goals: validation under 15% of a round, "
        "predict a 1000x1000 image under 2 s"
    )
    emit(args, result, [header + "\n" + markdown_table(headers, rows)])


if __name__ == "__main__":
    main()
