"""Predictions of two methods side by side on a few test images per site: a figure for
the README and the results pages (fundus: disc and cup contours on the image).

Both methods train with the same seed and settings; each model is the one selected on
validation (``selected.pt``); the test images are the first ``--images`` of each site's
test split. The table gives each method's test Dice per site (the mean over regions) and
each drawn image's Dice per region.

    python benchmarks/prediction_figure.py --dataset fundus --data-root ../shared/datasets/fundus \\
        --image-size 128 --rounds 20 --methods fedavg fedbcs \\
        --out benchmarks/results/fundus/predictions-fedavg-vs-fedbcs.png
    python benchmarks/prediction_figure.py --quick    # synthetic sites, 32x32, 2 rounds
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from common import emit, markdown_table, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset


def region_dice(prediction, truth, classes) -> float:
    import numpy as np

    p, t = np.isin(prediction, classes), np.isin(truth, classes)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


def predictions(run_dir: Path, data, images: int) -> dict:
    """Per site: the first test images, their truth and the selected model's labels."""
    import torch

    from fedbcs_lightning.evaluation.checkpoints import load_model
    from fedbcs_lightning.evaluation.predict import predict_masks

    model, _ = load_model(run_dir / "checkpoints" / "selected.pt")
    splits = json.loads((run_dir / "splits.json").read_text())
    out = {}
    for site in data.sites:
        chosen = splits[site.name]["test"][:images]
        pictures = [site.images[i] for i in chosen]
        batch = torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pictures])
        labels = predict_masks(model, batch).numpy()
        out[site.name] = [
            (chosen[k], pictures[k], site.masks[chosen[k]], labels[k]) for k in range(len(chosen))
        ]
    return out


def draw(results: dict, regions: dict, methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedbcs_lightning.reporting.visualize import overlay, to_rgb

    first = results[methods[0]]
    rows = [(site, k) for site in first for k in range(len(first[site]))]
    columns = ["image", "truth", *methods]
    figure, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.0 * len(columns), 2.1 * len(rows)), squeeze=False
    )
    for r, (site, k) in enumerate(rows):
        index, image, truth, _ = first[site][k]
        cells = [to_rgb(image), overlay(image, truth, regions=regions)]
        names = [f"{site} #{index}", "truth"]
        for method in methods:
            prediction = results[method][site][k][3]
            scores = " ".join(
                f"{name} {region_dice(prediction, truth, classes):.2f}"
                for name, classes in regions.items()
            )
            cells.append(overlay(image, prediction, regions=regions))
            names.append(f"{method}\n{scores}")
        for ax, picture, name in zip(axes[r], cells, names, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--methods", nargs=2, default=["fedavg", "fedbcs"])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--images", type=int, default=3, help="test images per site")
    p.add_argument("--out", type=Path, default=None, help="the PNG to write")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.image_size, args.images = 2, 32, 2
    seed = (args.seeds or [0])[0]
    out = args.out or Path(tempfile.mkdtemp()) / "predictions.png"
    results, tests, mixing = {}, {}, {}
    for method in args.methods:
        options = {
            "data": {"name": args.dataset, "image_size": args.image_size},
            "train": {"method": method, "rounds": args.rounds},
            "run": {"seed": seed, "log_images": 0},
        }
        if args.data_root:
            options["data"]["root"] = str(args.data_root)
        if args.quick:
            options["model"] = {"width": 4}
            options["data"]["synthetic"] = {"sites": 2, "images_per_site": 12}
        config = resolve(options=options)
        with tempfile.TemporaryDirectory() as tmp:
            run = fit(config, run_dir=tmp, progress=False)
            data = run.data or load_dataset(config)
            results[method] = predictions(Path(tmp), data, args.images)
            tests[method] = {s: m["dice"] for s, m in run.result.test_selected.items()}
            # FSR's share of the instance-normalised amplitude per level, first and last round
            history = run.result.history
            mixing[method] = {
                key: [history[0]["aggregate"][key], history[-1]["aggregate"][key]]
                for key in history[-1].get("aggregate", {})
                if key.startswith("fsr/")
            }
        regions = data.regions
    title = (
        f"{args.dataset}, {args.image_size}x{args.image_size}, {args.rounds} rounds, seed "
        f"{seed}; models selected on validation; contours: prediction per region"
    )
    draw(results, regions, args.methods, out, title)
    sites = list(tests[args.methods[0]])
    rows = [[m, *(f"{tests[m][s]:.4f}" for s in sites)] for m in args.methods]
    table = markdown_table(["method (test Dice, selected)", *sites], rows)
    shares = [
        [m, key, f"{first:.3f}", f"{last:.3f}"]
        for m, keys in mixing.items()
        for key, (first, last) in keys.items()
    ]
    tables = [table]
    if shares:
        tables.append(markdown_table(["method", "FSR layer", "round 1", "last round"], shares))
    result = {"seed": seed, "test_dice": tests, "fsr_mixing": mixing, "figure": str(out)}
    emit(args, result, tables)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
