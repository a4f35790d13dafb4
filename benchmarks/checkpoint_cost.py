"""Bytes and write time of the resumable state (``checkpoints/state.pt``) per round.

After one validated round of a 4-site federation, the trainer's state is written three
ways: with every tensor stored separately and zip checksums (how it was written at
first); with the tensors that equal the global ones (a client's, the selected model's)
stored once; and, as ``CheckpointWriter`` writes it now, stored once and without the zip
records' CRC-32 (which ``torch.load`` never checks). Write times are medians of
``--repeats`` atomic writes (fsync included) to a temporary folder.

    python benchmarks/checkpoint_cost.py            # smp U-Net with a ResNet-34 encoder, 64x64
    python benchmarks/checkpoint_cost.py --quick    # the tiny default U-Net
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import emit, markdown_table, parser

from fedbcs_lightning.api import InProcess
from fedbcs_lightning.config import resolve
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.io import atomic_torch_save


def unshared(value):
    """Every tensor copied: nothing shared, as the state was written before."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: unshared(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(unshared(v) for v in value)
    return value


def write(state, folder: Path, repeats: int, checksums: bool = True) -> tuple[int, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        path = atomic_torch_save(folder / "state.pt", state, checksums=checksums)
        times.append(time.perf_counter() - start)
    return path.stat().st_size, statistics.median(times)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model = {"width": 8} if args.quick else {"backbone": "smp-unet", "encoder": "resnet34"}
    result, rows = {}, []
    for method in ("fedavg", "fedbn"):
        config = resolve(options={
            "data": {"image_size": 32 if args.quick else 64,
                     "synthetic": {"sites": 4, "images_per_site": 8}},
            "model": model, "train": {"rounds": 1, "batch_size": 4, "method": method},
        })  # fmt: skip
        setup = InProcess().prepare(config)
        trainer = FederatedTrainer(setup.clients, setup.strategy, rounds=1)
        trainer.fit(setup.initial_weights)
        state = trainer.state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            separate = write(unshared(state), Path(tmp), args.repeats)
            shared = write(state, Path(tmp), args.repeats)
            now = write(state, Path(tmp), args.repeats, checksums=False)
        result[method] = {"shared_bytes": shared[0], "shared_s": shared[1],
                          "separate_bytes": separate[0], "separate_s": separate[1],
                          "now_bytes": now[0], "now_s": now[1]}  # fmt: skip
        rows.append([
            method, f"{separate[0] / 2**20:.1f}", f"{now[0] / 2**20:.1f}",
            f"{separate[0] / now[0]:.2f}x", f"{separate[1]:.3f}", f"{shared[1]:.3f}",
            f"{now[1]:.3f}", f"{separate[1] / now[1]:.2f}x",
        ])  # fmt: skip
    headers = ["method", "state.pt before MiB", "now MiB", "smaller by", "write before s",
               "shared, with CRC s", "write now s", "faster by"]  # fmt: skip
    emit(args, result, [markdown_table(headers, rows)])


if __name__ == "__main__":
    main()
