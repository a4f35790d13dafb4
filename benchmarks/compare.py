r"""Compare federated methods on one data set: per-site test Dice, a table and a plot.

Every method trains the same federation (same data, splits, initial weights and
hyper-parameters per seed). Reported per site: test Dice (mean over the data set's
regions) of the model selected on validation and of the last round, mean ± std over
seeds, and the mean over sites; and each method's paired difference to FedAvg per seed
with a bootstrap 95% interval. With ``--folds K`` each seed is K runs (K-fold
cross-validation over each site's images, or its patients/slides with
``data.group_pattern``) and a site's test Dice is pooled over its K test folds.
Writes ``compare-<dataset>.md`` (the tables), ``compare-<dataset>.png`` (validation
curves and test Dice per method) and ``compare-<dataset>.json`` (every number, rewritten
after each run) to ``--out``.

    python benchmarks/compare.py --dataset synthetic --seeds 0 1 2
    python benchmarks/compare.py --dataset nuclei --data-root ../shared/datasets/nuclei
    python benchmarks/compare.py --dataset nuclei --folds 5 --seeds 0 1 2 \
        --set 'data.group_pattern=^(\d+(?=_)|.+)'   # TNBC's slides; other files alone
    python benchmarks/compare.py --methods fedavg fedbcs fedbcs:cdpa=false fedbcs:fsr=false
    python benchmarks/compare.py --quick       # 32x32, 2 rounds, seed 0, 3 methods
    python benchmarks/compare.py --from-json a.json b.json   # join runs of other methods
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import bootstrap_interval, emit, markdown_table, mean_std, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.config import ConfigError, parse_override, resolve
from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint
from fedbcs_lightning.io import atomic_write_json, atomic_write_text

ORDER = ["local", "fedavg", "fedprox", "fedbn", "moon", "harmofl", "fpl", "fedbcs", "pooled"]


def variant(spec: str) -> tuple[str, list[str]]:
    """A method with options of its own section: ``fedbcs:cdpa=false,tau=0.5`` is method
    ``fedbcs`` with ``fedbcs.cdpa=false`` and ``fedbcs.tau=0.5`` (e.g. FedBCS's halves).

    >>> variant("fedbcs:cdpa=false,tau=0.5")
    ('fedbcs', ['fedbcs.cdpa=false', 'fedbcs.tau=0.5'])
    >>> variant("fedavg")
    ('fedavg', [])
    """
    method, _, options = spec.partition(":")
    return method, [f"{method}.{option}" for option in options.split(",") if option]


def run_once(spec: str, seed: int, fold: int | None, args) -> dict:
    """One training run (one fold when ``fold`` is set): per-site test Dice and images."""
    method, overrides = variant(spec)
    options = {
        "data": {"name": args.dataset, "image_size": args.image_size},
        "model": {"width": args.width},
        "train": {"method": method, "rounds": args.rounds},
        "run": {"seed": seed},
    }
    if args.data_root:
        options["data"]["root"] = str(args.data_root)
    if args.leave_out:
        options["data"]["leave_out"] = [args.leave_out]
    if fold is not None:
        options["data"].update(folds=args.folds, fold=fold)
    config = resolve(overrides=[*args.set, *overrides], options=options)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = fit(config, run_dir=tmp, progress=False).result
        seconds = time.perf_counter() - started
        splits = json.loads((Path(tmp) / "splits.json").read_text())
        unseen = {}
        if args.leave_out:  # every image of the site no training used
            for kind, name in (("selected", "selected.pt"), ("last", "last.pt")):
                scores = evaluate_checkpoint(
                    Path(tmp) / "checkpoints" / name, split="all", site=args.leave_out
                )
                unseen[kind] = scores.sites[args.leave_out]["dice"]
    return {
        "selected": {s: m["dice"] for s, m in result.test_selected.items()},
        "last": {s: m["dice"] for s, m in result.test_last.items()},
        "test_images": {s: len(parts["test"]) for s, parts in splits.items()},
        "unseen": unseen,
        "metrics": {"selected": result.test_selected, "last": result.test_last},
        "best_round": result.best_round,
        "val_curve": [
            r.get("val", {}).get("mean", {}).get("dice", math.nan) for r in result.history
        ],
        "seconds": seconds,
    }


def run_method(method: str, seed: int, args) -> dict:
    """One seed of ``method``: one run, or with ``--folds`` k one run per fold with each
    site's test Dice pooled over the folds (every image scored once, as a mean over
    images), the unseen site's averaged over the folds' models."""
    runs = [run_once(method, seed, f, args) for f in (range(args.folds) if args.folds else [None])]
    out: dict = {"folds": len(runs) if args.folds else 0}
    for kind in ("selected", "last"):
        pooled = {
            site: sum(r[kind][site] * r["test_images"][site] for r in runs)
            / sum(r["test_images"][site] for r in runs)
            for site in runs[0][kind]
        }
        out[f"mean_{kind}"] = statistics.mean(pooled.values())
        if args.leave_out:
            pooled[f"{args.leave_out} (unseen)"] = statistics.mean(r["unseen"][kind] for r in runs)
        out[kind] = pooled
    out["best_round"] = [r["best_round"] for r in runs] if args.folds else runs[0]["best_round"]
    out["val_curve"] = [
        statistics.mean(values) for values in zip(*(r["val_curve"] for r in runs), strict=True)
    ]
    out["seconds"] = sum(r["seconds"] for r in runs)
    if not args.folds:  # every test metric of each site (regions, HD95, ASSD, vCDR error)
        out["metrics"] = runs[0]["metrics"]
    return out


def table(results: dict[str, list[dict]]) -> str:
    methods = list(results)
    sites = list(results[methods[0]][0]["selected"])
    base = results.get("fedavg")
    rows = []
    for method in methods:
        runs = results[method]
        for kind in ("selected", "last"):
            cells = [mean_std([r[kind][site] for r in runs]) for site in sites]
            means = [r[f"mean_{kind}"] for r in runs]
            gain = ""
            if base is not None:
                ref = [r[f"mean_{kind}"] for r in base]
                gain = f"{100 * (statistics.mean(means) - statistics.mean(ref)):+.1f}"
            seconds = f"{statistics.median(r['seconds'] for r in runs):.0f}"
            rows.append([method, kind, *cells, mean_std(means), gain, seconds])
    headers = ["method", "model", *sites, "mean over sites", "vs fedavg (points)", "run time (s)"]
    return markdown_table(headers, rows)


def _score(run: dict, kind: str, site: str | None) -> float:
    """A seed's test Dice of one site, or the mean over the sites trained on (``None``)."""
    return run[f"mean_{kind}"] if site is None else run[kind][site]


def paired(results: dict[str, list[dict]], base: str = "fedavg") -> str:
    """Each method minus ``base``, seed by seed (same data, splits and initial weights),
    in Dice points: the mean over seeds with a bootstrap 95% interval, and in how many
    seeds the method is ahead; per site and for the mean over the sites trained on."""
    reference = results[base]
    sites = list(reference[0]["selected"])
    rows = []
    for method, runs in results.items():
        if method == base:
            continue
        for kind in ("selected", "last"):
            cells = []
            for column in [*sites, None]:
                diffs = [
                    100 * (_score(r, kind, column) - _score(b, kind, column))
                    for r, b in zip(runs, reference, strict=True)
                ]
                low, high = bootstrap_interval(diffs)
                ahead = sum(d > 0 for d in diffs)
                cells.append(
                    f"{statistics.mean(diffs):+.1f} [{low:+.1f}, {high:+.1f}] {ahead}/{len(diffs)}"
                )
            rows.append([method, kind, *cells])
    headers = ["method", "model", *sites, "mean over sites"]
    return (
        f"paired difference to {base} (points; mean over seeds [bootstrap 95% interval] "
        f"seeds ahead)\n\n" + markdown_table(headers, rows)
    )


def curves(results: dict[str, list[dict]]) -> str:
    """Mean validation Dice (mean over sites and seeds) after each round, per method."""
    rows = []
    for method, runs in results.items():
        per_round = zip(*(r["val_curve"] for r in runs), strict=True)
        rows.append([method, *(f"{statistics.mean(values):.3f}" for values in per_round)])
    rounds = len(rows[0]) - 1
    return markdown_table(["validation Dice", *(f"r{k}" for k in range(1, rounds + 1))], rows)


def regions_table(results: dict[str, list[dict]], kind: str = "selected") -> str:
    """Per region, and the vertical cup-to-disc ratio error where the data set has one:
    the mean over sites, mean ± std over seeds, and for vCDR the paired difference to
    FedAvg (negative: smaller error)."""
    runs = next(iter(results.values()))
    if not all("metrics" in r for rs in results.values() for r in rs):
        return ""
    first = next(iter(runs[0]["metrics"][kind].values()))
    keys = [k for k in first if k.startswith("dice/")]
    cdr = "vcdr_error" in first
    keys += ["vcdr_error"] if cdr else []

    def site_mean(run: dict, key: str) -> float:
        values = [m.get(key, math.nan) for m in run["metrics"][kind].values()]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return statistics.mean(finite) if finite else math.nan

    base = results.get("fedavg")
    rows = []
    for method, method_runs in results.items():
        cells = [mean_std([site_mean(r, k) for r in method_runs]) for k in keys]
        if cdr and base is not None:
            diffs = [
                site_mean(r, "vcdr_error") - site_mean(b, "vcdr_error")
                for r, b in zip(method_runs, base, strict=True)
            ]
            low, high = bootstrap_interval(diffs)
            cells.append(f"{statistics.mean(diffs):+.4f} [{low:+.4f}, {high:+.4f}]")
        rows.append([method, *cells])
    headers = ["method", *(k.replace("dice/", "Dice ") for k in keys)]
    headers += ["vCDR error vs fedavg"] if cdr and base is not None else []
    return (
        f"test metrics of the model selected on validation, mean over sites (mean ± std over "
        f"seeds)\n\n{markdown_table(headers, rows)}\n\n"
    )


def report(header: str, results: dict[str, list[dict]]) -> str:
    """The markdown the script prints and writes: header, table, orderings, curves."""
    pairs = f"{paired(results)}\n\n" if "fedavg" in results and len(results) > 1 else ""
    return (
        f"{header}\n\n{table(results)}\n\n{pairs}{regions_table(results)}"
        f"ordering (selected on validation): {ordering(results)}\n\n"
        f"ordering (last round): {ordering(results, 'last')}\n\n"
        f"ordering on validation (highest mean validation Dice over the rounds, mean over "
        f"seeds, then each seed's; what to choose a default on): "
        f"{validation_ordering(results)}\n\n"
        f"{curves(results)}"
    )


def _ranked(scores: dict[str, list[float]], per_seed: bool = False) -> str:
    """Methods by their mean score over seeds, highest first, in points."""
    means = {m: statistics.mean(values) for m, values in scores.items()}
    ranked = sorted(means, key=means.get, reverse=True)
    return " > ".join(
        f"{m} ({100 * means[m]:.1f}"
        + (": " + " ".join(f"{100 * v:.1f}" for v in scores[m]) if per_seed else "")
        + ")"
        for m in ranked
    )


def validation_ordering(results: dict[str, list[dict]]) -> str:
    return _ranked(
        {
            m: [max(v for v in r["val_curve"] if not math.isnan(v)) for r in runs]
            for m, runs in results.items()
        },
        per_seed=True,
    )


def ordering(results: dict[str, list[dict]], kind: str = "selected") -> str:
    return _ranked({m: [r[f"mean_{kind}"] for r in runs] for m, runs in results.items()})


def plot(results: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(13, 4.5))
    for method in methods:
        runs = results[method]
        curves_of_seeds = [r["val_curve"] for r in runs]
        curve = [statistics.mean(values) for values in zip(*curves_of_seeds, strict=True)]
        curves.plot(range(1, len(curve) + 1), curve, label=method)
    curves.set(xlabel="round", ylabel="validation Dice (mean over sites)", title="validation")
    curves.legend(fontsize=8)
    sites = list(results[methods[0]][0]["selected"])
    width = 0.8 / len(sites)
    for k, site in enumerate(sites):
        means = [statistics.mean(r["selected"][site] for r in results[m]) for m in methods]
        xs = [i + (k - (len(sites) - 1) / 2) * width for i in range(len(methods))]
        bars.bar(xs, means, width, label=site)
    overall = [statistics.mean(r["mean_selected"] for r in results[m]) for m in methods]
    bars.scatter(range(len(methods)), overall, color="black", zorder=3, label="mean")
    bars.set_xticks(range(len(methods)), methods, rotation=30)
    bars.set(ylabel="test Dice (selected on validation)", title="test, per site")
    bars.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


RESULTS = Path(__file__).resolve().parent / "results"


def joined(files: list[Path], p) -> tuple[list[int], dict[str, list[dict]]]:
    """The seeds every method of ``files`` finished and those runs, methods in file order.
    Each file adds methods, seeds, or both (runs are matched by seed, so a method's seeds
    may come from several files); a method's run of one seed given twice is an error."""
    runs: dict[str, dict[int, dict]] = {}
    order: list[int] = []
    for path in files:
        saved = json.loads(path.read_text())
        for method, method_runs in saved["results"].items():
            mine = runs.setdefault(method, {})
            for seed, run in zip(saved["seeds"], method_runs, strict=False):  # a stopped run
                if seed in mine:
                    p.error(f"--from-json {path}: method {method!r}, seed {seed} was run before")
                mine[seed] = run
        order += [seed for seed in saved["seeds"] if seed not in order]
    seeds = [seed for seed in order if all(seed in mine for mine in runs.values())]
    return seeds, {method: [mine[seed] for seed in seeds] for method, mine in runs.items()}


def output_folder(out: Path | None, quick: bool) -> Path:
    """Where results go: ``out``, else the committed results folder, except that a smoke
    run (``--quick``) goes to a new temporary folder and never replaces committed results."""
    if out is not None:
        return out
    return Path(tempfile.mkdtemp(prefix="compare-quick-")) if quick else RESULTS


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="default: every method; METHOD:key=value,... sets options of the method's own "
        "section (e.g. fedbcs:cdpa=false for FSR alone)",
    )
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument(
        "--leave-out",
        default=None,
        metavar="SITE",
        help="train on the other sites and score every image of SITE too (an unseen site); "
        "the mean over sites stays the mean over the sites trained on",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="K-fold cross-validation: K runs per method and seed, fold k the test split "
        "(data.folds, data.fold), each site's test Dice pooled over the folds",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the table, JSON and plot (default benchmarks/results; with --quick "
        "a temporary folder, so that a smoke run never replaces the committed results)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="no training: write the table and plot of earlier runs' JSON beside the first "
        "FILE, from the seeds every method finished (a stopped run); several FILEs (runs of "
        "other methods with the same seeds and options, or of the same methods with other "
        "seeds) are joined into the first; give the runs' other options too",
    )
    args = p.parse_args()
    args.out = output_folder(args.out, args.quick)
    for override in args.set:
        parse_override(override)  # fail before any training
    args.image_size = args.image_size or (32 if args.quick else 64)
    args.rounds = args.rounds or (2 if args.quick else 20)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    known = [m for m in ORDER if m in METHODS.names()]
    known += [m for m in METHODS.names() if m not in known]
    if args.leave_out:  # local keeps no model for a site that no training used
        known.remove("local")
    methods = args.methods or (["fedavg", "fpl", "fedbcs"] if args.quick else known)
    for spec in methods:  # fail before any training
        method, overrides = variant(spec)
        try:
            resolve(overrides=[*args.set, *overrides], options={"train": {"method": method}})
        except ConfigError as err:
            p.error(f"--methods {spec}: {err}")
    if args.folds == 1 or args.folds < 0:
        p.error("--folds: 0 (one split) or at least 2")
    if args.leave_out and not args.from_json and "local" in [variant(s)[0] for s in methods]:
        p.error("--leave-out: method local has no model for a site that no training used")
    stem = args.out / (
        f"compare-{args.dataset}"
        + (f"-{args.folds}fold" if args.folds else "")
        + (f"-without-{args.leave_out}" if args.leave_out else "")
    )
    if args.from_json:
        seeds, results = joined(args.from_json, p)
        stem = args.from_json[0].with_suffix("")
        if len(args.from_json) > 1:  # the table, plot and JSON describe the same runs
            atomic_write_json(stem.with_suffix(".json"), {"seeds": seeds, "results": results})
    else:
        results = {method: [] for method in methods}
        for seed in seeds:  # every method of a seed before the next: a stopped run stays paired
            for method in methods:
                results[method].append(run_method(method, seed, args))
                atomic_write_json(stem.with_suffix(".json"), {"seeds": seeds, "results": results})
    header = (
        f"{args.dataset}, {args.image_size}x{args.image_size}, U-Net width {args.width}, "
        f"{args.rounds} rounds x 1 local epoch, seeds {seeds}"
        + (f", {args.folds}-fold cross-validation (Dice pooled over folds)" if args.folds else "")
        + (f", {args.leave_out} left out of training" if args.leave_out else "")
        + (f", overrides {args.set}" if args.set else "")
        + "; test Dice (mean over regions) per site, mean ± std over seeds"
    )
    text = report(header, results)
    atomic_write_text(stem.with_suffix(".md"), text + "\n")
    plot(results, stem.with_suffix(".png"), header)
    emit(args, {"header": header, "seeds": seeds, "results": results}, [text])
    print(f"wrote {stem}.md, .json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
