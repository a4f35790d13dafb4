"""FedAvg vs FedBCS on three real nuclei sites (../shared/datasets/nuclei by default).

Each site's images are split into train/val/test by the seed (held-out test images per
site); training uses random native-resolution crops, evaluation scores whole images with
sliding windows. Reported: per-site test nucleus Dice (model selected on validation and
last round) and the mean over sites, mean ± std over seeds.

    python benchmarks/nuclei_real.py            # 128x128 crops, 12 rounds, seeds 0 1
    python benchmarks/nuclei_real.py --quick    # 96x96 crops, 1 round, seed 0
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import emit, markdown_table, mean_std, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.metrics import mean_over_sites

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nuclei"


def run(method: str, seed: int, root: Path, size: int, rounds: int, width: int) -> dict:
    config = resolve(
        options={
            "data": {"name": "nuclei", "root": str(root), "image_size": size},
            "model": {"width": width},
            "train": {"method": method, "rounds": rounds},
            "run": {"seed": seed},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = fit(config, run_dir=tmp, progress=False).result
        seconds = time.perf_counter() - started
    return {
        "selected": {s: m["dice"] for s, m in result.test_selected.items()},
        "last": {s: m["dice"] for s, m in result.test_last.items()},
        "mean_selected": mean_over_sites(result.test_selected)["dice"],
        "mean_last": mean_over_sites(result.test_last)["dice"],
        "seconds": seconds,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    args = p.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"nuclei sites not found at {args.root}; pass --root")
    size = args.image_size or (96 if args.quick else 128)
    rounds = args.rounds or (1 if args.quick else 12)
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    methods = ["fedavg", "fedbcs"]
    results = {m: [run(m, s, args.root, size, rounds, args.width) for s in seeds] for m in methods}
    sites = list(results["fedavg"][0]["selected"])
    rows = []
    for method in methods:
        for kind in ("selected", "last"):
            cells = [mean_std([r[kind][site] for r in results[method]]) for site in sites]
            mean = mean_std([r[f"mean_{kind}"] for r in results[method]])
            rows.append([method, kind, *cells, mean])
    table = markdown_table(["method", "model", *sites, "mean over sites"], rows)
    seconds = {m: round(sum(r["seconds"] for r in results[m])) for m in methods}
    header = (
        f"real nuclei sites, {size}x{size} crops (4 per image and epoch), U-Net width "
        f"{args.width}, {rounds} rounds x 1 local epoch, seeds {seeds}; test nucleus "
        f"Dice on held-out whole images; total training time {seconds} s"
    )
    emit(
        args,
        {"image_size": size, "rounds": rounds, "seeds": seeds, "results": results},
        [f"{header}\n{table}"],
    )


if __name__ == "__main__":
    main()
