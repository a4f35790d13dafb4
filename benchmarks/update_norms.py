"""How large an honest client update is: the ratio ``||update - global|| / ||global||``
that ``server.max_update_norm`` bounds, per method, round and site, on real data.

Every method trains a few rounds on each data set with the library's defaults (and the
methods named by ``--heavy`` with 5 local epochs and a 10x learning rate as well: the
largest honest settings a user is likely to choose); a callback records each accepted update's
ratio against the weights the server sent (the validator's own ``relative_change``).
The table gives the largest ratio per method and setting; the default bound of
``server.max_update_norm`` is chosen above the largest of all with a margin, and a
scaled attack (1e30, the case the bound exists for) sits many orders above it.

    python benchmarks/update_norms.py --nuclei ../shared/datasets/nuclei \\
        --fundus ../shared/datasets/fundus --methods fedavg harmofl moon fedbcs:cdpa=true \\
        --heavy fedavg
    python benchmarks/update_norms.py --quick     # synthetic sites, 32x32, 2 rounds
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import emit, markdown_table, parser

from fedbcs_lightning.api import fit
from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import resolve
from fedbcs_lightning.federation.updates import relative_change

METHODS = ["fedavg", "fedprox", "fedbn", "moon", "harmofl", "fedbcs", "fedbcs:cdpa=true"]


class Ratios(FederatedCallback):
    """Each accepted update's ``||update - sent|| / ||sent||`` over the shared tensors
    (a method's local tensors are never averaged, and the validator does not bound them)."""

    def __init__(self) -> None:
        self.values: list[tuple[int, str, float]] = []

    def on_client_fit_end(self, trainer, server_round, update) -> None:
        strategy = trainer.strategy
        sent = {k: v for k, v in trainer.weights.items() if not strategy.is_local(k)}
        self.values.append((server_round, update.client, relative_change(update.weights, sent)))


def run(dataset: str, root: Path | None, label: str, setting: dict, args) -> dict:
    method, _, own = label.partition(":")
    options = {
        "data": {"name": dataset, "image_size": args.image_size},
        "model": {"width": args.width},
        "train": {"method": method, "rounds": args.rounds, **setting},
        "run": {
            "seed": 0,
            "log_images": 0,
            "checkpoint_every": args.rounds,
            "eval_every": args.rounds,
        },
    }
    if root is not None:
        options["data"]["root"] = str(root)
    if dataset == "synthetic":
        options["data"]["synthetic"] = {"images_per_site": 12 if args.quick else 40}
    overrides = [f"{method}.{pair}" for pair in own.split(",") if pair]
    config = resolve(overrides=overrides, options=options)
    ratios = Ratios()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(config, run_dir=tmp, progress=False, callbacks=[ratios])
    return {
        "dataset": dataset,
        "method": label,
        "setting": setting,
        "ratios": ratios.values,
        "largest": max(v for _, _, v in ratios.values),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nuclei", type=Path, default=None, help="the nuclei sites' folder")
    p.add_argument("--fundus", type=Path, default=None, help="the fundus folder (DoFE layout)")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument(
        "--heavy",
        nargs="*",
        default=None,
        metavar="METHOD",
        help="also train these methods (default: fedavg) with 5 local epochs at a 10x rate",
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.image_size, args.width, args.methods = 2, 32, 4, ["fedavg", "fedbcs"]
    sets = [
        (name, root) for name, root in (("nuclei", args.nuclei), ("fundus", args.fundus)) if root
    ]
    sets = sets or [("synthetic", None)]
    heavy = {"local_epochs": 5, "lr": 1e-2}
    plan = [(label, {}) for label in args.methods]
    if args.heavy is not None:
        plan += [(label, heavy) for label in args.heavy or ["fedavg"]]
    runs = []
    for dataset, root in sets:
        for label, setting in plan:
            runs.append(run(dataset, root, label, setting, args))
            done = runs[-1]
            print(f"{dataset} {label} {_setting(setting)}: largest {done['largest']:.3f} "
                  f"({done['seconds']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    rows = [
        [r["dataset"], r["method"], _setting(r["setting"]), f"{r['largest']:.3f}",
         f"{max(v for k, _, v in r['ratios'] if k > 1):.3f}" if args.rounds > 1 else "–",
         f"{r['seconds']:.0f}"]
        for r in runs
    ]  # fmt: skip
    largest = max(r["largest"] for r in runs)
    header = (
        f"Honest update ratios ||update - global|| / ||global|| ({args.rounds} rounds, "
        f"{args.image_size}x{args.image_size}, width {args.width}, seed 0); largest "
        f"{largest:.3f}"
    )
    table = markdown_table(
        ["data", "method", "setting", "largest (any round)", "largest after round 1", "s"], rows
    )
    emit(args, {"runs": runs, "largest": largest}, [header, table])


def _setting(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"


if __name__ == "__main__":
    main()
