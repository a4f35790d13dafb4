"""What differential privacy costs: test Dice against epsilon, per method.

Each method trains once without privacy, once without privacy but with GroupNorm in
place of BatchNorm (as private training has it: so that the table separates what the
noise costs from what the normalisation changes), and once per DP-SGD noise multiplier
(``privacy.mode=sample``: per-image clipping and noise at every site, noised prototypes
for FedBCS), for a fixed number of rounds, on every seed. A method may carry settings of
its own: ``fedbcs:fedbcs.weight=0.1``. Reported: the epsilon the run
spent (delta = 1e-5 by default, the largest over sites, from the sites' Opacus
accountants), the mean over sites of test Dice of the model selected on validation and
of the last round (mean ± std over seeds), and the paired change against the same
method without privacy. Writes ``privacy-<dataset>.md``, ``.json`` and ``.png`` (Dice
against epsilon) to ``--out``.

    python benchmarks/privacy.py --dataset synthetic --images-per-site 400 --seeds 0 1 \
        --methods fedavg fedbcs fedbcs:fedbcs.weight=0.1
    python benchmarks/privacy.py --dataset nuclei --data-root ../shared/datasets/nuclei
    python benchmarks/privacy.py --quick        # 32x32, 2 rounds, one noise level

``--reuse`` keeps the runs of an earlier invocation with the same settings (the JSON in
``--out``) and trains only the missing ones: add a noise level or a seed without
training the others again.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import emit, markdown_table, mean_std, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import ConfigError, resolve
from fedbcs_lightning.evaluation.metrics import mean_over_sites
from fedbcs_lightning.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
NOISE_NAMES = {0.0: "off", -1.0: "off, GroupNorm"}


GROUPNORM = -1.0  # the noise column's value of the non-private GroupNorm runs


def variant(label: str) -> tuple[str, list[str]]:
    """``fedbcs:fedbcs.weight=0.1`` -> method ``fedbcs`` with that override."""
    method, _, own = label.partition(":")
    return method, [override for override in own.split(",") if override]


def run(label: str, noise: float, seed: int, args) -> dict:
    method, own = variant(label)
    options = {
        "data": {"name": args.dataset, "image_size": args.image_size, "crops_per_image": 1},
        "model": {"width": args.width, "norm": "group" if noise == GROUPNORM else "batch"},
        "train": {"method": method, "rounds": args.rounds},
        "run": {"seed": seed, "eval_every": args.eval_every, "checkpoint_every": args.rounds},
        "privacy": {"delta": args.delta},
    }
    if args.dataset == "synthetic":
        options["data"]["synthetic"] = {"images_per_site": args.images_per_site}
    if args.data_root:
        options["data"]["root"] = str(args.data_root)
    if noise > 0:
        options["privacy"].update(
            mode="sample",
            noise_multiplier=noise,
            prototype_noise_multiplier=args.prototype_noise,
        )
    config = resolve(overrides=[*args.set, *own], options=options)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = fit(config, run_dir=tmp, progress=False).result
        seconds = time.perf_counter() - started
    spent = [m.get("privacy/epsilon", 0.0) for m in result.history[-1]["train"].values()]
    return {
        "method": label,
        "noise": noise,
        "seed": seed,
        "epsilon": max(spent) if noise > 0 else math.inf,
        "selected": mean_over_sites(result.test_selected)["dice"],
        "last": mean_over_sites(result.test_last)["dice"],
        "seconds": seconds,
    }


def paired(rows: list[dict], baseline: list[dict], kind: str) -> str:
    """Mean (and range) over seeds of the change against a non-private run."""
    base = {r["seed"]: r[kind] for r in baseline}
    diffs = [100 * (r[kind] - base[r["seed"]]) for r in rows if r["seed"] in base]
    if not diffs:
        return ""
    if len(diffs) == 1:
        return f"{diffs[0]:+.1f}"
    return f"{statistics.mean(diffs):+.1f} [{min(diffs):+.1f}, {max(diffs):+.1f}]"


def table(rows: list[dict]) -> str:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        batchnorm = [r for r in mine if r["noise"] == 0]
        groupnorm = [r for r in mine if r["noise"] == GROUPNORM]
        for noise in sorted({r["noise"] for r in mine}):
            group = [r for r in mine if r["noise"] == noise]
            eps = max(r["epsilon"] for r in group)
            private = noise > 0
            out.append(
                [
                    method,
                    NOISE_NAMES.get(noise, f"{noise:g}"),
                    "∞" if math.isinf(eps) else f"{eps:.2f}",
                    mean_std([r["selected"] for r in group]),
                    mean_std([r["last"] for r in group]),
                    paired(group, batchnorm, "selected") if private else "",
                    paired(group, groupnorm, "selected") if private else "",
                    paired(group, groupnorm, "last") if private else "",
                    f"{statistics.median(r['seconds'] for r in group):.0f}",
                ]
            )
    headers = [
        "method",
        "noise multiplier",
        "epsilon (max over sites)",
        "test Dice, selected",
        "test Dice, last round",
        "Δ selected vs off (points)",
        "Δ selected vs off, GroupNorm",
        "Δ last vs off, GroupNorm",
        "s per run",
    ]
    return markdown_table(headers, out)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        private = sorted({r["noise"] for r in mine if r["noise"] > 0}, reverse=True)
        eps = [max(r["epsilon"] for r in mine if r["noise"] == n) for n in private]
        dice = [statistics.mean(r["selected"] for r in mine if r["noise"] == n) for n in private]
        (line,) = ax.plot(eps, dice, "o-", label=method)
        base = [r["selected"] for r in mine if r["noise"] == GROUPNORM]
        if base:
            ax.axhline(statistics.mean(base), color=line.get_color(), ls="--", lw=1)
    ax.set_xlabel("epsilon (delta = 1e-5), whole run")
    ax.set_ylabel("mean test Dice (selected on validation)")
    ax.set_title(title)
    ax.legend(title="dashed: no privacy (GroupNorm)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--methods", nargs="+", default=["fedavg", "fedbcs"])
    p.add_argument("--noise", type=float, nargs="+", default=[0.8, 1.2, 2.0])
    p.add_argument("--prototype-noise", type=float, default=None)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--images-per-site", type=int, default=120, help="synthetic data only")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE config override")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="keep earlier runs of these settings")
    args = p.parse_args()
    for label in args.methods:  # fail before any training
        method, own = variant(label)
        try:
            resolve(overrides=[*args.set, *own], options={"train": {"method": method}})
        except ConfigError as err:
            p.error(f"{label}: {err}")
    if args.quick:
        args.noise, args.rounds, args.images_per_site, args.seeds = [1.0], 2, 16, [0]
    seeds = args.seeds or [0]
    if args.prototype_noise is None:
        from fedbcs_lightning.config import PrivacyConfig

        args.prototype_noise = PrivacyConfig().prototype_noise_multiplier
    out = args.out or (Path(tempfile.mkdtemp(prefix="privacy-quick-")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    run_settings = (
        f"{args.dataset}, {args.rounds} rounds, {args.image_size}x{args.image_size}, width "
        f"{args.width}, prototype noise multiplier {args.prototype_noise:g}"
        + (f", {args.images_per_site} images per site" if args.dataset == "synthetic" else "")
        + (f", overrides {args.set}" if args.set else "")
    )
    settings = f"{run_settings}, seeds {seeds}"
    # runs of other seeds are kept too: adding a seed trains only that seed's runs
    key = [run_settings, args.eval_every, args.delta, args.set, str(args.data_root)]
    path = out / f"privacy-{args.dataset}.json"
    earlier = {}
    if args.reuse and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            earlier = {(r["method"], r["noise"], r["seed"]): r for r in saved["rows"]}
    rows = []
    for seed in seeds:
        for method in args.methods:
            for noise in [0.0, GROUPNORM, *args.noise]:
                found = earlier.get((method, noise, seed))
                rows.append(found or run(method, noise, seed, args))
                atomic_write_json(path, {"key": key, "rows": rows})
    text = f"Privacy cost on {settings}\n\n{table(rows)}"
    atomic_write_text(out / f"privacy-{args.dataset}.md", text + "\n")
    plot(rows, out / f"privacy-{args.dataset}.png", f"DP-SGD on {args.dataset}")
    emit(args, {"settings": settings, "rows": rows}, [text])


if __name__ == "__main__":
    main()
