"""FedBCS vs FedAvg, and FedBCS's ablations, on the synthetic multi-site set.

Every variant trains the same federation (same data, splits, initial weights and
hyper-parameters per seed) and is scored on the sites' test splits with the model
selected on validation and with the last round's model. Reported: mean over sites of the
mean Dice over regions (disc, cup), mean ± std over seeds.

    python benchmarks/fedbcs_vs_fedavg.py            # 64x64, 20 rounds, seeds 0 1 2
    python benchmarks/fedbcs_vs_fedavg.py --quick    # 32x32, 4 rounds, seed 0, 3 variants
"""

from __future__ import annotations

import statistics
import tempfile
import time

from common import emit, markdown_table, mean_std, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.evaluation.metrics import mean_over_sites

CDPA = {"train": {"method": "fedbcs"}, "fedbcs": {"cdpa": True}}
VARIANTS = {
    "fedavg": {"train": {"method": "fedavg"}},
    "fedbcs (default: FSR alone)": {"train": {"method": "fedbcs"}},
    "fedbcs with CDPA (the paper's)": CDPA,
    "fedbcs, CDPA alone (no FSR)": {**CDPA, "fedbcs": {"cdpa": True, "fsr": False}},
    "fedbcs with CDPA, encoder level only": {
        **CDPA,
        "fedbcs": {"cdpa": True, "prototype_levels": ["encoder"]},
    },
    "fedbcs with CDPA, decoder level only": {
        **CDPA,
        "fedbcs": {"cdpa": True, "prototype_levels": ["decoder"]},
    },
    "fedbcs with CDPA, plain mean instead of FINCH": {
        **CDPA,
        "fedbcs": {"cdpa": True, "clustering": "mean"},
    },
}


def run_variant(overrides: dict, seed: int, size: int, rounds: int, width: int) -> dict:
    base = {
        "data": {"image_size": size},
        "model": {"width": width},
        "train": {"rounds": rounds},
        "run": {"seed": seed},
    }
    options = {k: {**base.get(k, {}), **overrides.get(k, {})} for k in {*base, *overrides}}
    config = resolve(options=options)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = fit(config, run_dir=tmp, progress=False)
        seconds = time.perf_counter() - started
    result = run.result
    return {
        "selected": mean_over_sites(result.test_selected)["dice"],
        "last": mean_over_sites(result.test_last)["dice"],
        "best_round": result.best_round,
        "seconds": seconds,
        "per_site_selected": {s: m["dice"] for s, m in result.test_selected.items()},
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    args = p.parse_args()
    size = args.image_size or (32 if args.quick else 64)
    rounds = args.rounds or (4 if args.quick else 20)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = args.variants or (list(VARIANTS)[:3] if args.quick else list(VARIANTS))
    results = {
        name: [run_variant(VARIANTS[name], s, size, rounds, args.width) for s in seeds]
        for name in names
    }
    base_sel = [r["selected"] for r in results[names[0]]]
    rows = []
    for name in names:
        sel = [r["selected"] for r in results[name]]
        last = [r["last"] for r in results[name]]
        gain = [100 * (a - b) for a, b in zip(sel, base_sel, strict=True)]
        rows.append(
            [
                name,
                mean_std(sel),
                mean_std(last),
                f"{statistics.mean(gain):+.1f}",
                f"{statistics.median(r['seconds'] for r in results[name]):.0f}",
            ]
        )
    table = markdown_table(
        [
            "method",
            "Dice (selected on val)",
            "Dice (last round)",
            f"vs {names[0]} (points, selected)",
            "median run time (s)",
        ],
        rows,
    )
    header = (
        f"synthetic fundus, 4 sites, {size}x{size}, U-Net width {args.width}, "
        f"{rounds} rounds x 1 local epoch, seeds {seeds}; test Dice = mean over sites "
        f"of mean(disc, cup)"
    )
    emit(
        args,
        {
            "image_size": size,
            "rounds": rounds,
            "width": args.width,
            "seeds": seeds,
            "results": results,
        },
        [f"{header}\n{table}"],
    )


if __name__ == "__main__":
    main()
