"""Cost of one local training step: FedBCS vs FedAvg, and where FedBCS's cost comes from.

Each variant runs in a fresh process (so peak memory is its own): the same U-Net, batch
and images; one step = forward, losses, backward, optimiser step, and (for FedBCS) the
prototype accumulation of the last local epoch, with global prototypes present so the
alignment loss is computed. Reported: median step time over the timed steps, its ratio to
FedAvg measured in the same run, and the peak resident memory of the process.

Memory is reported twice: the process's peak resident memory, and its growth from just
before the first step (what training itself holds: activations, gradients, optimiser
moments), each with its ratio to FedAvg.

Variants:
- fedavg: segmentation loss only.
- fedbcs: the default, FSR alone (closed form; no prototypes, no alignment loss).
- fedbcs-fft-fsr: the default with FSR computed through the FFT.
- fedbcs-cdpa: FSR and CDPA, the paper's whole method (fusion convolutions applied only
  to anchor features and class sums, never densely; at most 1024 anchors per class and
  level).
- fedbcs-cdpa-all-anchors: the same with every foreground pixel as an anchor (as the
  paper).
- fedbcs-cdpa-dense: descriptors as the reference computes them (concat with the
  upsampled context at full resolution, 1x1 conv, 768-channel map materialised at e1's
  resolution), every foreground pixel an anchor.

    python benchmarks/step_cost.py            # width 32, 128x128, batch 6, 12 steps
    python benchmarks/step_cost.py --quick    # width 16, 64x64, 6 steps
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time

from common import emit, markdown_table, parser

VARIANTS = {  # FedBCS options per variant (None: FedAvg)
    "fedavg": None,
    "fedbcs": {},
    "fedbcs-fft-fsr": {"fsr_mode": "fft"},
    "fedbcs-cdpa": {"cdpa": True},
    "fedbcs-cdpa-all-anchors": {"cdpa": True, "max_anchors": 0},
    "fedbcs-cdpa-dense": {"cdpa": True, "max_anchors": 0},
}


def _dense_descriptors(module):
    """Swap in the reference's dense descriptor computation (for comparison only)."""
    import torch
    import torch.nn.functional as F

    class DenseDescriptor:
        def __init__(self, maps, size):
            self.size = size
            self.map = torch.cat([F.interpolate(m, size=size, mode="nearest") for m in maps], 1)

        def at(self, b, y, x):
            return self.map[b, :, y, x]

        def class_sums(self, labels, num_classes):
            onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(self.map.dtype)
            return torch.einsum("bchw,bdhw->cd", onehot, self.map), onehot.sum((0, 2, 3))

    def naive_fusion(fusion, levels, context):
        out = []
        for local, ctx, f in zip(fusion.local, fusion.context, levels, strict=True):
            weight = torch.cat([local.weight, ctx.weight], 1)
            up = F.interpolate(context, size=f.shape[-2:], mode="nearest")
            out.append(F.conv2d(torch.cat([f, up], 1), weight, local.bias))
        return out

    heads = module.prototype_descriptors

    def forward(output):
        enc = naive_fusion(heads.fusions["encoder"], output.encoder[:-1], output.encoder[-1])
        dec = naive_fusion(heads.fusions["decoder"], output.decoder[1:], output.decoder[0])
        return {
            "encoder": DenseDescriptor(enc, tuple(output.encoder[0].shape[-2:])),
            "decoder": DenseDescriptor(dec, tuple(output.decoder[1].shape[-2:])),
        }

    heads.forward = forward


def _measure(
    variant: str, width: int, size: int, batch: int, steps: int, threads: int, queue
) -> None:
    import torch

    from fedbcs_lightning.data.synthetic import render_sites
    from fedbcs_lightning.methods.base import Instruction
    from fedbcs_lightning.methods.fedbcs.strategy import FedBCS
    from fedbcs_lightning.methods.options import FedBCSOptions
    from fedbcs_lightning.methods.prototypes import PrototypeBank
    from fedbcs_lightning.models.losses import segmentation_loss
    from fedbcs_lightning.models.unet import UNet

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    data = render_sites("fundus", 1, batch, size, seed=0)
    images = torch.from_numpy(data.sites[0].images).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(data.sites[0].masks).long()
    net = UNet(3, 3, width=width)
    hook = None
    if VARIANTS[variant] is not None:
        opts = FedBCSOptions(**VARIANTS[variant])
        strategy = FedBCS(opts)
        net = strategy.configure_backbone(net)
        if variant == "fedbcs-cdpa-dense":
            _dense_descriptors(net)
        hooks = strategy.client_hooks()  # none for FSR alone
        hook = hooks[0] if hooks else None
    if hook is not None:
        dim = 3 * opts.prototype_dim
        bank = PrototypeBank(
            {(lvl, c): torch.randn(2, dim) for lvl in ("encoder", "decoder") for c in range(3)}
        )

        class Module:  # what the hook reads from the Lightning module
            backbone = net
            current_epoch = 0

        hook.on_fit_start(Module, Instruction({}, {"prototypes": bank.to_dict()}))
    start_mb = _resident_mb()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        output = net.forward_features(images)
        loss = segmentation_loss(output.logits, masks)
        if hook is not None:
            loss = loss + sum(hook.extra_losses(Module, (images, masks), output).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if hook is not None:
            hook.on_train_batch_end(Module, (images, masks), output, 0)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "variant": variant,
            "median_s": statistics.median(times[2:]),
            "peak_mb": peak_mb,
            "training_mb": peak_mb - start_mb,
        }
    )


def _resident_mb() -> float:
    """The process's resident memory now (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def fsr_layer_times(
    width: int, size: int, batch: int, threads: int, repeats: int = 20
) -> list[dict]:
    """Forward + backward of one FSR layer at each FSR level's shape: closed form vs FFT."""
    import torch

    from fedbcs_lightning.methods.fedbcs.fsr import FrequencyStyleRecalibration

    torch.set_num_threads(threads)
    rows = []
    for level in (2, 3, 4):
        channels, side = width * 2 ** (level - 1), size // 2 ** (level - 1)
        x = torch.randn(batch, channels, side, side, requires_grad=True)
        row = {"level": level, "shape": [batch, channels, side, side]}
        for mode in ("closed", "fft"):
            layer = FrequencyStyleRecalibration(channels, mode=mode)
            times = []
            for _ in range(repeats + 2):
                start = time.perf_counter()
                layer(x).square().mean().backward()
                times.append(time.perf_counter() - start)
            row[mode] = statistics.median(times[2:])
        row["ratio"] = row["fft"] / row["closed"]
        rows.append(row)
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    args = p.parse_args()
    width = args.width or (16 if args.quick else 32)
    size = args.image_size or (64 if args.quick else 128)
    steps = args.steps or (4 if args.quick else 12)
    fsr_repeats = 5 if args.quick else 20
    ctx = mp.get_context("spawn")
    rows = []
    for variant in VARIANTS:
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_measure,
            args=(variant, width, size, args.batch_size, steps, args.threads, queue),
        )
        proc.start()
        rows.append(queue.get())
        proc.join()
    base = rows[0]
    for row in rows:
        row["ratio"] = row["median_s"] / base["median_s"]
        row["peak_ratio"] = row["peak_mb"] / base["peak_mb"]
        row["training_ratio"] = row["training_mb"] / base["training_mb"]
    result = {
        "width": width,
        "image_size": size,
        "batch_size": args.batch_size,
        "steps": steps,
        "threads": args.threads,
        "rows": rows,
        "fsr_layer": fsr_layer_times(width, size, args.batch_size, args.threads, fsr_repeats),
    }
    table = markdown_table(
        [
            "variant",
            "median step (s)",
            "ratio to fedavg",
            "peak RSS (MB)",
            "ratio",
            "training memory (MB)",
            "ratio",
        ],
        [
            [
                r["variant"],
                f"{r['median_s']:.3f}",
                f"{r['ratio']:.2f}",
                f"{r['peak_mb']:.0f}",
                f"{r['peak_ratio']:.2f}",
                f"{r['training_mb']:.0f}",
                f"{r['training_ratio']:.2f}",
            ]
            for r in rows
        ],
    )
    fsr_table = markdown_table(
        ["FSR level", "input shape", "closed form (ms)", "FFT (ms)", "FFT / closed"],
        [
            [
                r["level"],
                "x".join(map(str, r["shape"])),
                f"{1000 * r['closed']:.2f}",
                f"{1000 * r['fft']:.2f}",
                f"{r['ratio']:.1f}",
            ]
            for r in result["fsr_layer"]
        ],
    )
    emit(
        args,
        result,
        [
            f"U-Net width {width}, {size}x{size}, batch {args.batch_size}, "
            f"{args.threads} thread(s), median of {steps} steps after 2 warm-up steps\n{table}",
            f"one FSR layer, forward + backward, median of {fsr_repeats}\n{fsr_table}",
        ],
    )


if __name__ == "__main__":
    main()
