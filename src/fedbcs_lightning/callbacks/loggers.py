"""Experiment trackers as federated callbacks: Weights & Biases, a CSV table, TensorBoard.

All three log the same flat metrics per round (:func:`flatten_record`):

- ``train/<site>/loss/<name>``: each site's mean training losses,
- ``val/<site>/dice`` and ``val/<site>/dice/<region>``, with ``<site>`` = ``mean`` for the
  mean over sites,
- ``server/<name>``: what the method reports after aggregation, e.g. FedBCS's prototype
  cluster counts ``server/clusters/<level>/<class>`` and FSR mixing weights
  ``server/fsr/level<k>/normalised``.

W&B and TensorBoard also show the first ``num_images`` validation images of every site
with the ground truth and the prediction, about ten times per run and at the last round.
Build them by name with :func:`create_loggers` (config key ``run.loggers``).

Examples
--------
>>> loggers = create_loggers(["csv"], "/tmp/fedbcs-doc-run", config={})
>>> [type(logger).__name__ for logger in loggers]
['CSVLogger']
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.callbacks.builtin import versions
from fedbcs_lightning.catalog import LOGGERS
from fedbcs_lightning.io import atomic_write_text

WANDB_PROJECT = "fedbcs-lightning"


def create_loggers(
    names: Iterable[str],
    run_dir: str | Path,
    config: dict[str, Any],
    class_names: list[str] | None = None,
    num_images: int = 4,
) -> list[FederatedCallback]:
    """One callback per logger name (repeats ignored); ``config`` is the resolved config
    as a dict, ``class_names`` label the W&B masks, ``num_images`` validation images per
    site are shown as overlays (0 = none)."""
    loggers: list[FederatedCallback] = []
    for name in dict.fromkeys(names):
        if name == "wandb":
            loggers.append(WandbLogger(run_dir, config, class_names, num_images))
        elif name == "csv":
            loggers.append(CSVLogger(run_dir))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, config, num_images))
        else:
            raise ValueError(f"unknown logger {name!r}; valid loggers: {', '.join(LOGGERS)}")
    return loggers


def flatten_record(record: dict[str, Any]) -> dict[str, float]:
    """The round ``record`` of :class:`FederatedTrainer` as flat ``{key: number}``."""
    flat: dict[str, float] = {}
    for site, losses in record.get("train", {}).items():
        flat.update(_numbers(losses, f"train/{site}/"))
    val = record.get("val", {})
    for site, metrics in {**val.get("sites", {}), "mean": val.get("mean", {})}.items():
        flat.update(_numbers(metrics, f"val/{site}/"))
    flat.update(_numbers(record.get("aggregate") or {}, "server/"))
    if record.get("rejected"):
        flat["server/rejected_updates"] = float(len(record["rejected"]))
    return flat


def _numbers(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        prefix + key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def is_image_round(server_round: int, rounds: int) -> bool:
    """Rounds that log prediction overlays: about ten per run, and the last one."""
    return server_round % max(1, rounds // 10) == 0 or server_round == rounds


def _image_samples(trainer: Any, record: dict[str, Any], count: int) -> dict[str, list]:
    """Predictions of the sites validated this round (their models hold the evaluated
    weights right after validation)."""
    from fedbcs_lightning.reporting.plots import predict_samples

    clients = trainer.local_clients  # a remote site's images never reach the server
    sites = [s for s in record.get("val", {}).get("sites", {}) if s in clients]
    samples = {site: predict_samples(clients[site], count) for site in sites}
    return {site: items for site, items in samples.items() if items}


class CSVLogger(FederatedCallback):
    """``metrics.csv``: one row per round, one column per metric of :func:`flatten_record`.

    The file is rewritten atomically after every round (columns may appear in later
    rounds, e.g. FedBCS's alignment loss from round 2). A resumed run (the trainer starts
    after round ``trainer.server_round``) keeps the rows up to that round and replaces the
    rest.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: dict[int, dict[str, float]] = {}

    def on_fit_start(self, trainer: Any) -> None:
        self.rows = {}
        done = trainer.server_round
        if done and self.path.is_file():
            with self.path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    server_round = int(float(row["round"]))
                    if server_round <= done:
                        self.rows[server_round] = {k: float(v) for k, v in row.items() if v != ""}
        elif not done:
            self.path.unlink(missing_ok=True)

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        self.rows[server_round] = {"round": server_round, **flatten_record(record)}
        columns = list(dict.fromkeys(k for r in self.rows.values() for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for key in sorted(self.rows):
            writer.writerow({k: _csv_value(v) for k, v in self.rows[key].items()})
        atomic_write_text(self.path, buffer.getvalue())


def _csv_value(value: float) -> str | int:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    return repr(value)


class TensorBoardLogger(FederatedCallback):
    """TensorBoard event files under ``<run_dir>/tensorboard``: every metric of
    :func:`flatten_record` as a scalar at ``step = round``, the resolved config as text,
    and prediction overlays (image | ground truth | prediction) per site. A resumed run
    drops the events after the round it resumes from."""

    def __init__(
        self, run_dir: str | Path, config: dict[str, Any] | None = None, num_images: int = 4
    ) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        self.config = config or {}
        self.num_images = num_images
        self.writer = None

    def on_fit_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        done = trainer.server_round
        if done:
            _after_existing_event_files(self.log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=done + 1 if done else None)
        if not done:
            import yaml

            text = yaml.safe_dump(self.config, sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "```", 0)

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        for key, value in flatten_record(record).items():
            self.writer.add_scalar(key, value, server_round)
        if self.num_images and is_image_round(server_round, trainer.rounds):
            from fedbcs_lightning.reporting.plots import overlay_strip

            for site, samples in _image_samples(trainer, record, self.num_images).items():
                picture = overlay_strip(samples)
                self.writer.add_image(f"overlays/{site}", picture, server_round, dataformats="HWC")
        self.writer.flush()

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        if self.writer is not None:
            self.writer.close()


def _after_existing_event_files(log_dir: Path) -> None:
    """Wait (at most a second) until a new event file would sort after the existing ones.

    TensorBoard reads a folder's event files in name order, and names start with the
    creation time in whole seconds; a resumed run's purge of the rounds after the resume
    point only applies to events read before it. A resume within the same second as the
    interrupted run's start would otherwise sort first and keep those rounds twice.
    """
    stamps = [
        int(parts[3])
        for path in log_dir.glob("events.out.tfevents.*")
        if len(parts := path.name.split(".")) > 3 and parts[3].isdigit()
    ]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


def wandb_mode() -> str | None:
    """``"offline"`` unless ``WANDB_MODE`` is set (then W&B reads it) or ``WANDB_API_KEY``
    is (then W&B goes online)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return None
    return "offline"


class WandbLogger(FederatedCallback):
    """A Weights & Biases run per fit, its files under ``<run_dir>/wandb``.

    Offline unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says otherwise (one line tells
    where an offline run is and the ``wandb sync`` command that uploads it). Logs the
    resolved config with the library versions (``versions``), every metric of
    :func:`flatten_record` with ``step = round`` (``val/<site>/...`` keys group per site),
    prediction overlays ``overlays/<site>`` as ``wandb.Image`` with ``prediction`` and
    ``ground_truth`` masks, and the test metrics in the run summary (``test/selected/...``,
    ``test/last/...``). The project is ``$WANDB_PROJECT`` or ``fedbcs-lightning``.

    :meth:`state_dict` holds the run id; after :meth:`load_state_dict` the next fit
    continues that run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        num_images: int = 4,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = config or {}
        self.class_names = class_names
        self.num_images = num_images
        self.run_id: str | None = None
        self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def on_fit_start(self, trainer: Any) -> None:
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            name=self.run_dir.name,
            dir=str(self.run_dir.resolve()),
            id=self.run_id,
            resume="allow" if self.run_id else None,
            mode=wandb_mode(),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run_id = self.run.id
        self.run.config.update({**self.config, "versions": versions()}, allow_val_change=True)
        for site in [*trainer.clients, "mean"]:
            self.run.define_metric(f"val/{site}/dice", summary="max")
        if self.run.offline:
            # a resumed run writes a folder per process; all of them make up the run
            folders = sorted(
                {
                    *map(
                        str,
                        Path(self.run.settings.sync_dir).parent.glob(
                            f"offline-run-*-{self.run_id}"
                        ),
                    ),
                    str(self.run.settings.sync_dir),
                }
            )
            where = " ".join(folders)
            print(f"W&B is offline: run saved in {where}; upload it with `wandb sync {where}`")
        elif not self.run.disabled:
            print(f"W&B run: {self.run.url}")

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        data: dict[str, Any] = {"round": server_round, **flatten_record(record)}
        if self.num_images and is_image_round(server_round, trainer.rounds):
            for site, samples in _image_samples(trainer, record, self.num_images).items():
                data[f"overlays/{site}"] = [self._image(sample) for sample in samples]
        self.run.log(data, step=server_round)

    def _image(self, sample: Any) -> Any:
        import numpy as np
        import wandb

        from fedbcs_lightning.reporting.visualize import to_rgb

        names = self.class_names or []
        count = max(len(names), int(max(sample.truth.max(), sample.prediction.max())) + 1)
        labels = {i: names[i] if i < len(names) else f"class {i}" for i in range(count)}
        masks = {
            key: {"mask_data": mask.astype(np.uint8), "class_labels": labels}
            for key, mask in (("prediction", sample.prediction), ("ground_truth", sample.truth))
        }
        return wandb.Image(
            to_rgb(sample.image),
            masks=masks,
            caption=f"{sample.site} validation #{sample.index}",
        )

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        summary: dict[str, Any] = {"best_round": result.best_round}
        from fedbcs_lightning.evaluation.metrics import mean_over_sites

        for name, per_site in (("selected", result.test_selected), ("last", result.test_last)):
            for site, metrics in {**per_site, "mean": mean_over_sites(per_site)}.items():
                summary.update(_numbers(metrics, f"test/{name}/{site}/"))
        self.run.summary.update(summary)
        self.run.finish()
