"""Training throughput: images per second and peak memory, FedAvg vs FedBCS, per precision
and with or without ``torch.compile``.

Two synthetic sites train the reference U-Net through the library (``FederatedTrainer``,
Lightning, the method's hooks): FedAvg, FedBCS's default (FSR alone) and FedBCS with
CDPA (``fedbcs-cdpa``, whose alignment runs from round 2). A round's training
time runs from its start to the last site's update (validation only after the last
round, which is not timed); rounds 1 and 2 are warm-up (compilation, the first
alignment). Reported per configuration: the median over the timed rounds of training
images per second, its ratio to FedAvg in the same precision and compile setting, and the
peak GPU memory (on a CUDA GPU). Every configuration runs in this one process, one after
the other, on the accelerator ``run.accelerator=auto`` picks (the GPU where there is one).

    python benchmarks/gpu_throughput.py            # width 32, 256x256, batch 32, 6 rounds
    python benchmarks/gpu_throughput.py --quick    # width 8, 32x32, fp32, no compile (CPU)
"""

from __future__ import annotations

import itertools
import statistics
import time

from common import emit, markdown_table, parser

from fedbcs_lightning.api import InProcess
from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import resolve
from fedbcs_lightning.federation.trainer import FederatedTrainer


class TrainClock(FederatedCallback):
    """Seconds from each round's start to its last site's update."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds: dict[int, float] = {}

    def on_round_start(self, trainer, server_round: int) -> None:
        self.start = time.perf_counter()

    def on_client_fit_end(self, trainer, server_round: int, update) -> None:
        self.seconds[server_round] = time.perf_counter() - self.start


METHODS = {  # name: config sections that select it
    "fedavg": {"train": {"method": "fedavg"}},
    "fedbcs": {"train": {"method": "fedbcs"}},  # the default: FSR alone
    "fedbcs-cdpa": {"train": {"method": "fedbcs"}, "fedbcs": {"cdpa": True}},
}


def measure(method: str, precision: str, compiled: bool, args) -> dict:
    import torch

    config = resolve(
        options={
            **METHODS[method],
            "data": {
                "image_size": args.image_size,
                "synthetic": {"sites": 2, "images_per_site": args.images},
                "augment": False,
            },
            "model": {"width": args.width},
            "train": {
                **METHODS[method]["train"],
                "rounds": args.rounds,
                "batch_size": args.batch,
            },
            "run": {
                "precision": precision,
                "compile": compiled,
                "channels_last": args.channels_last,
                "eval_every": args.rounds,
                "log_images": 0,
            },
        }
    )
    setup = InProcess().prepare(config)
    images = sum(c.num_train_examples for c in setup.clients) * config.train.local_epochs
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = TrainClock()
    trainer = FederatedTrainer(setup.clients, setup.strategy, config.train.rounds, [clock])
    trainer.fit(setup.initial_weights)
    timed = [clock.seconds[r] for r in range(3, config.train.rounds + 1)]
    return {
        "images_per_s": images / statistics.median(timed),
        "train_images_per_round": images,
        "rounds_timed": len(timed),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--images", type=int, default=None, help="images per site")
    p.add_argument("--rounds", type=int, default=None, help="rounds 3.. are timed")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = p.parse_args()
    quick = args.quick
    args.image_size = args.image_size or (32 if quick else 256)
    args.width = args.width or (8 if quick else 32)
    args.batch = args.batch or (8 if quick else 32)
    args.images = args.images or (24 if quick else 960)
    args.rounds = args.rounds or (4 if quick else 6)
    precisions = ["32"] if quick else ["32", "bf16-mixed"]
    compiles = [False] if quick else [False, True]
    results = {}
    for precision, compiled, method in itertools.product(precisions, compiles, METHODS):
        key = f"{method} {precision} {'compile' if compiled else 'eager'}"
        results[key] = measure(method, precision, compiled, args)
    rows = []
    for key, result in results.items():
        method, precision, mode = key.split()
        base = results[f"fedavg {precision} {mode}"]["images_per_s"]
        memory = result["peak_memory_gib"]
        rows.append([
            method, precision, mode, f"{result['images_per_s']:.0f}",
            f"{base / result['images_per_s']:.2f}x",
            "–" if memory is None else f"{memory:.2f}",
        ])  # fmt: skip
    first = next(iter(results.values()))
    header = (
        f"{first['device']}; U-Net width {args.width}, {args.image_size}x{args.image_size}, "
        f"batch {args.batch}, 2 sites, {first['train_images_per_round']} training images per "
        f"round, channels_last {args.channels_last}; median of rounds 3-{args.rounds}"
    )
    table = markdown_table(
        ["method", "precision", "mode", "train images/s", "time vs fedavg", "peak GPU GiB"],
        rows,
    )
    emit(args, {"header": header, "results": results}, [header, table])


if __name__ == "__main__":
    main()
