"""How much does the synthetic sites' style shift cost? A cross-site Dice matrix.

Trains one model per site on that site alone, then scores it on every site's test split.
The diagonal is in-site Dice, the rest is cross-site Dice; the gap between them is what
the acquisition style costs. A control run with style strength 0 (identical styles)
shows the gap that remains from content alone.

    python benchmarks/synthetic_shift.py            # 64x64, 40 epochs, seeds 0 1 2
    python benchmarks/synthetic_shift.py --quick    # 32x32, 15 epochs, seed 0
"""

from __future__ import annotations

import statistics
import time

from common import emit, markdown_table, mean_std, parser

from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.evaluation.metrics import evaluate
from fedbcs_lightning.federation.build import build_clients
from fedbcs_lightning.methods import Instruction
from fedbcs_lightning.methods.fedavg import FedAvg


def cross_site_matrix(image_size: int, epochs: int, seed: int, strength: float, width: int):
    cfg = resolve(
        options={
            "data": {"image_size": image_size, "synthetic": {"style_strength": strength}},
            "model": {"width": width},
            "train": {"local_epochs": epochs},
            "run": {"seed": seed},
        }
    )
    data = load_dataset(cfg)
    splits = make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, seed)
    clients = build_clients(cfg, data, splits, FedAvg())
    start = clients[0].get_weights()
    matrix = []
    for client in clients:
        client.fit(Instruction(start))
        model = client.module.backbone
        matrix.append(
            [evaluate(model, other.loaders["test"], data.regions)["dice"] for other in clients]
        )
    return [s.name for s in data.sites], matrix


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--width", type=int, default=16)
    args = p.parse_args()
    size = args.image_size or (32 if args.quick else 64)
    epochs = args.epochs or (15 if args.quick else 40)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started = time.perf_counter()
    result = {"image_size": size, "epochs": epochs, "width": args.width, "seeds": seeds, "runs": {}}
    tables = []
    for strength in (1.0, 0.0):
        per_seed = [cross_site_matrix(size, epochs, seed, strength, args.width) for seed in seeds]
        names = per_seed[0][0]
        k = len(names)
        cells = [[[m[i][j] for _, m in per_seed] for j in range(k)] for i in range(k)]
        diag = [statistics.mean(m[i][i] for i in range(k)) for _, m in per_seed]
        off = [
            statistics.mean(m[i][j] for i in range(k) for j in range(k) if i != j)
            for _, m in per_seed
        ]
        result["runs"][str(strength)] = {
            "sites": names,
            "matrices": [m for _, m in per_seed],
            "in_site": diag,
            "cross_site": off,
        }
        rows = [
            [f"trained on {names[i]}"] + [mean_std(cells[i][j]) for j in range(k)] for i in range(k)
        ]
        tables.append(
            f"style strength {strength}: mean test Dice (rows: training site, columns: test "
            f"site; seeds {seeds}, {size}x{size}, {epochs} epochs)\n"
            + markdown_table(["", *names], rows)
            + f"\n\nin-site {mean_std(diag)}, cross-site {mean_std(off)}, "
            f"cost of the shift {mean_std([d - o for d, o in zip(diag, off, strict=True)])}"
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    tables.append(f"total time {result['seconds']} s")
    emit(args, result, tables)


if __name__ == "__main__":
    main()
