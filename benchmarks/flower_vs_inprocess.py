"""Seconds per round in-process vs on a loopback Flower deployment, and bytes per site.

The same run (3 synthetic sites, tiny U-Net, validation every round) twice: ``fedbcs fit``
(every site in one process) and ``fedbcs serve`` with three ``fedbcs join`` on 127.0.0.1
(a SuperLink, three SuperNodes, a fresh client-app process per message). Both run as
subprocesses; a round's time is the gap between the moments its rows appear in
``metrics.jsonl`` (polled every 0.1 s), round 1 (start-up) left out; the table gives the
median over rounds and the ratio of the two, measured in one run. Bytes per round and
site are those of the Flower records a round sends to a site and gets back (weights,
method extras such as FedBCS's prototypes; HTTP framing excluded), from one round of
each method.

    python benchmarks/flower_vs_inprocess.py            # fedavg and fedbcs, 6 rounds
    python benchmarks/flower_vs_inprocess.py --quick    # fedavg, 3 rounds
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, markdown_table, parser

FEDBCS = str(Path(sys.executable).parent / "fedbcs")
TINY = ["--image-size", "32", "--batch-size", "4", "--set", "model.width=8", "--set",
        "data.synthetic.sites=3", "--set", "data.synthetic.images_per_site=12"]  # fmt: skip
SITES = ["site1", "site2", "site3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def round_times(run_dir: Path, processes: list[subprocess.Popen], rounds: int) -> list[float]:
    """When each round's rows appeared in metrics.jsonl, until the first process exits."""
    seen: dict[int, float] = {}
    path = run_dir / "metrics.jsonl"
    while processes[0].poll() is None:
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    seen.setdefault(json.loads(line)["round"], time.monotonic())
        time.sleep(0.1)
    if processes[0].returncode != 0 or len(seen) < rounds:
        raise RuntimeError(f"the run failed (exit {processes[0].returncode}); see {run_dir}")
    marks = [seen[r] for r in range(1, rounds + 1)]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def in_process(method: str, rounds: int, folder: Path) -> list[float]:
    run = folder / f"fit-{method}"
    options = ["--method", method, "--rounds", str(rounds), *TINY, "--output", str(run)]
    fit = subprocess.Popen([FEDBCS, "fit", *options], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    return round_times(run, [fit], rounds)


def on_flower(method: str, rounds: int, folder: Path) -> list[float]:
    run, port = folder / f"serve-{method}", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    serve = subprocess.Popen(
        [FEDBCS, "serve", "--method", method, "--rounds", str(rounds), *TINY, "--sites", "3",
         "--output", str(run), "--home", str(folder / f"server-{method}"), "--host",
         "127.0.0.1", "--port", str(port), "--insecure"], **quiet,
    )  # fmt: skip
    sites = [
        subprocess.Popen(
            [
                FEDBCS,
                "join",
                "--server",
                f"127.0.0.1:{port}",
                "--site",
                site,
                "--state-dir",
                str(folder / f"{method}-{site}"),
                "--port",
                str(free_port()),
                "--insecure",
            ],
            **quiet,
        )  # fmt: skip
        for site in SITES
    ]
    try:
        return round_times(run, [serve, *sites], rounds)
    finally:
        for process in sites:
            process.terminate()
        for process in sites:
            process.wait()


def bytes_per_round(method: str) -> dict[str, int]:
    """Bytes of one site's round-2 records: what it receives and what it sends back."""
    from fedbcs_lightning.config import resolve
    from fedbcs_lightning.data import load_dataset, make_splits
    from fedbcs_lightning.federation.build import build_clients
    from fedbcs_lightning.flower.records import encode_instruction, encode_update, nbytes
    from fedbcs_lightning.methods import create_strategy

    config = resolve(options={
        "data": {"image_size": 32, "synthetic": {"sites": 3, "images_per_site": 12}},
        "model": {"width": 8}, "train": {"method": method, "batch_size": 4},
    })  # fmt: skip
    data = load_dataset(config)
    splits = make_splits(data, config.data.val_fraction, config.data.test_fraction, 0)
    strategy = create_strategy(config)
    clients = build_clients(config, data, splits, strategy)
    weights = clients[0].get_weights()
    names = [c.name for c in clients]
    for server_round in (1, 2):  # round 2 carries the global prototypes, if any
        instructions = strategy.configure_train(server_round, weights, names)
        updates = [c.fit(instructions[c.name]) for c in clients]
        weights, _ = strategy.aggregate_train(server_round, updates)
    down = nbytes(encode_instruction(instructions[names[0]], {"kind": "fit"}))
    up = nbytes(encode_update(updates[0]))
    return {
        "down_weights": down["weights"], "down_extras": down["extras"],
        "up_weights": up["weights"], "up_payload": up["payload"],
    }  # fmt: skip


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    methods = ["fedavg"] if args.quick else ["fedavg", "fedbcs"]
    rounds = 3 if args.quick else 6
    result, rows, byte_rows = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            local = in_process(method, rounds, Path(tmp))
            flower = on_flower(method, rounds, Path(tmp))
            sizes = bytes_per_round(method)
            result[method] = {"in_process_s": local, "flower_s": flower, "bytes": sizes}
            a, b = statistics.median(local), statistics.median(flower)
            rows.append([method, len(local), f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x"])
            kib = {k: f"{v / 1024:.1f}" for k, v in sizes.items()}
            byte_rows.append([method, kib["down_weights"], kib["down_extras"],
                              kib["up_weights"], kib["up_payload"]])  # fmt: skip
    tables = [
        markdown_table(
            ["method", "rounds timed", "in-process s/round", "Flower s/round", "ratio"], rows
        ),
        markdown_table(
            [
                "method",
                "to a site: weights KiB",
                "extras KiB",
                "from a site: weights KiB",
                "payload KiB",
            ],
            byte_rows,
        ),  # fmt: skip
    ]
    emit(args, result, tables)


if __name__ == "__main__":
    main()
