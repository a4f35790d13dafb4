"""What the federated loop costs beyond the work itself.

Three ways to do the same work (4 synthetic sites, FedAvg, one local epoch per round, every
site validated every round): a plain PyTorch loop (load the global weights, the same
optimiser steps on the same batches, average, the same ``evaluate``); the library's
``FederatedTrainer`` with no callbacks (a Lightning ``Trainer`` per client and round,
update checks); and ``fedbcs_lightning.api.fit`` with its default callbacks (metrics,
checkpoints every round, plots), and once more with the resumable state written only after
the last round (``run.checkpoint_every`` = the rounds), which isolates what writing it every
round costs. The table gives the median seconds per round (round 1, with its warm-up, left
out) and each one's overhead over the plain loop, measured in one run.

    python benchmarks/loop_overhead.py            # 64x64, width 16, 6 rounds
    python benchmarks/loop_overhead.py --quick    # 32x32, width 8, 3 rounds
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import emit, markdown_table, parser

from fedbcs_lightning.api import InProcess, fit
from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import merge, resolve
from fedbcs_lightning.evaluation.metrics import evaluate
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.methods import ClientUpdate, weighted_average
from fedbcs_lightning.models.losses import segmentation_loss


class RoundClock(FederatedCallback):
    def __init__(self) -> None:
        self.ends: list[float] = [time.perf_counter()]

    def on_round_end(self, trainer, server_round, record) -> None:
        self.ends.append(time.perf_counter())


def per_round(ends: list[float]) -> list[float]:
    return [b - a for a, b in zip(ends[1:], ends[2:], strict=False)]  # round 1 left out


def plain_loop(config) -> list[float]:
    setup = InProcess().prepare(config)
    clients, weights = setup.clients, setup.initial_weights
    optimizers = {c.name: c.module.build_optimizer() for c in clients}
    ends = [time.perf_counter()]
    for _ in range(config.train.rounds):
        updates = []
        for client in clients:
            model = client.module.backbone
            model.load_state_dict(weights)
            model.train()
            optimizer = optimizers[client.name]
            for images, masks in client.loaders["train"]:
                optimizer.zero_grad()
                loss = segmentation_loss(model.forward_features(images).logits, masks)
                loss.backward()
                optimizer.step()
            updates.append(client.get_weights())
        weights = weighted_average(
            [
                ClientUpdate(c.name, u, c.num_train_examples)
                for u, c in zip(updates, clients, strict=True)
            ]
        )
        for client in clients:
            client.module.backbone.load_state_dict(weights)
            evaluate(client.module.backbone, client.loaders["val"], client.regions,
                     window=client.window)  # fmt: skip
        ends.append(time.perf_counter())
    return per_round(ends)


def bare_trainer(config) -> list[float]:
    setup = InProcess().prepare(config)
    clock = RoundClock()
    trainer = FederatedTrainer(setup.clients, setup.strategy, config.train.rounds, [clock])
    clock.ends = [time.perf_counter()]
    trainer.fit(setup.initial_weights)
    return per_round(clock.ends)


def full_fit_last_state_only(config) -> list[float]:
    return full_fit(merge(config, {"run": {"checkpoint_every": config.train.rounds}}))


def full_fit(config) -> list[float]:
    clock = RoundClock()
    with tempfile.TemporaryDirectory() as tmp:
        clock.ends = [time.perf_counter()]
        fit(config, Path(tmp) / "run", callbacks=[clock], progress=False)
    return per_round(clock.ends)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, width, rounds = (32, 8, 3) if args.quick else (64, 16, 6)
    config = resolve(options={
        "data": {"image_size": size, "synthetic": {"sites": 4, "images_per_site": 24}},
        "model": {"width": width}, "train": {"rounds": rounds, "batch_size": 8},
    })  # fmt: skip
    times = {
        "plain PyTorch loop": plain_loop(config),
        "FederatedTrainer": bare_trainer(config),
        "api.fit (default callbacks)": full_fit(config),
        "api.fit, state.pt after the last round only": full_fit_last_state_only(config),
    }
    base = statistics.median(times["plain PyTorch loop"])
    rows = [
        [name, len(t), f"{statistics.median(t):.3f}",
         f"{100 * (statistics.median(t) / base - 1):+.1f}%"]
        for name, t in times.items()
    ]  # fmt: skip
    headers = ["loop", "rounds timed", "median s/round", "overhead vs plain"]
    emit(args, {"seconds_per_round": times}, [markdown_table(headers, rows)])


if __name__ == "__main__":
    main()
