"""W&B (offline), CSV and TensorBoard loggers and the plots, on one tiny FedBCS run."""

import contextlib
import csv
import io
import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.api import fit
from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.callbacks.loggers import CSVLogger, WandbLogger, create_loggers
from fedbcs_lightning.config import ConfigError
from tests.helpers import tiny_fedbcs as tiny

PNG = b"\x89PNG\r\n\x1a\n"


class TrainerProbe(FederatedCallback):
    def on_fit_start(self, trainer):
        self.trainer = trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("loggers") / "run"
    probe = TrainerProbe()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        fit(
            tiny(loggers=["wandb", "csv", "tensorboard"], log_images=2),
            run_dir=run_dir,
            callbacks=[probe],
            progress=False,
        )
    wandb_logger = next(c for c in probe.trainer.callbacks if isinstance(c, WandbLogger))
    return SimpleNamespace(dir=run_dir, printed=printed.getvalue(), wandb=wandb_logger)


def wandb_records(run_dir: Path) -> list:
    """Records of the offline run's ``.wandb`` file, once W&B's service has written its
    exit record (it writes in the background; ``run.finish()`` does not wait for the disk)."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return finished_records(path)


def finished_records(path: Path) -> list:
    deadline = time.monotonic() + 60
    while True:
        records = list(_read_records(path.read_bytes()))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.5)


def _read_records(data: bytes):
    """A LevelDB-style log of protobuf records: 32 KiB blocks, 7-byte record headers."""
    from wandb.proto import wandb_internal_pb2 as pb

    assert data[:4] == b":W&B"
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(data):
            break  # end of the written part
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def test_unknown_logger_names_are_rejected_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown logger 'mlflow'.*wandb, csv, tensorboard"):
        create_loggers(["csv", "mlflow"], tmp_path, config={})
    with pytest.raises(ConfigError, match=r"run.loggers: 'mlflow' is not one of wandb, csv"):
        tiny(loggers=["mlflow"])
    result = CliRunner().invoke(app, ["fit", "--logger", "mlflow", "--output", str(tmp_path)])
    assert result.exit_code != 0
    assert "run.loggers" in result.output and "tensorboard" in result.output
    assert "Traceback" not in result.output


def test_wandb_runs_offline_and_says_so_in_one_line(run):
    lines = [line for line in run.printed.splitlines() if "W&B" in line]
    assert len(lines) == 1
    assert "offline" in lines[0] and f"wandb sync {run.dir / 'wandb'}" in lines[0]


def test_wandb_offline_run_holds_config_metrics_and_images(run):
    config, history, summary, run_ids = {}, [], set(), []
    for record in wandb_records(run.dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_ids.append(record.run.run_id)
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key for i in record.history.item})
        elif kind == "summary":
            summary |= {"/".join(i.nested_key) or i.key for i in record.summary.update}
    assert run_ids == [run.wandb.run_id]
    assert config["train"]["method"] == "fedbcs" and config["model"]["width"] == 4
    assert config["run"]["loggers"] == ["wandb", "csv", "tensorboard"]
    assert set(config["versions"]) >= {"torch", "lightning", "fedbcs-lightning"}
    keys = set().union(*history)
    for site in ("site1", "site2", "mean"):
        assert {f"val/{site}/dice", f"val/{site}/dice/disc", f"val/{site}/dice/cup"} <= keys
    assert {"train/site1/loss/total", "train/site2/loss/seg", "round"} <= keys
    assert any(k.startswith("server/clusters/encoder/") for k in keys)
    assert "server/fsr/level2/normalised" in keys
    assert {"overlays/site1/_type", "overlays/site2/all_masks"} <= keys
    assert "test/selected/site1/dice" in summary and "best_round" in summary
    assert {"test/selected/mean/dice", "test/last/mean/dice"} <= set(summary)


def test_wandb_run_id_round_trips_into_a_second_fit(run, tmp_path):
    state = run.wandb.state_dict()
    assert state == {"run_id": run.wandb.run_id} and state["run_id"]
    resumed = WandbLogger(tmp_path, config={}, num_images=0)
    resumed.load_state_dict(state)
    with contextlib.redirect_stdout(io.StringIO()):
        fit(tiny(rounds=1, log_images=0), run_dir=tmp_path, callbacks=[resumed], progress=False)
    assert resumed.state_dict() == state
    ids = [r.run.run_id for r in wandb_records(tmp_path) if r.WhichOneof("record_type") == "run"]
    assert ids == [state["run_id"]]


def test_csv_has_one_row_per_round_matching_metrics_jsonl(run):
    with (run.dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert {"val/site1/dice/cup", "val/mean/dice", "server/fsr/level3/normalised"} <= set(rows[0])
    lines = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    (site1,) = [
        r for r in lines if r["round"] == 2 and r["split"] == "val" and r["site"] == "site1"
    ]
    assert float(rows[1]["val/site1/dice/disc"]) == pytest.approx(site1["dice/disc"])


def record(value: float) -> dict:
    return {
        "train": {"a": {"loss/total": value}},
        "aggregate": {"clusters/encoder/1": 2},
        "val": {"sites": {"a": {"dice": value}}, "mean": {"dice": value}},
    }


def test_csv_resume_keeps_the_rounds_before_the_checkpoint_and_replaces_the_rest(tmp_path):
    first = CSVLogger(tmp_path)
    first.on_fit_start(SimpleNamespace(server_round=0))
    for server_round in (1, 2, 3):
        first.on_round_end(None, server_round, record(0.1 * server_round))
    resumed = CSVLogger(tmp_path)
    resumed.on_fit_start(SimpleNamespace(server_round=2))  # a trainer restored after round 2
    resumed.on_round_end(None, 3, record(0.9))
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["round"], float(r["val/a/dice"])) for r in rows] == [
        ("1", 0.1),
        ("2", 0.2),
        ("3", 0.9),
    ]
    assert rows[0]["server/clusters/encoder/1"] == "2"
    CSVLogger(tmp_path).on_fit_start(SimpleNamespace(server_round=0))  # a new run starts over
    assert not (tmp_path / "metrics.csv").exists()


def test_tensorboard_holds_scalars_per_round_and_overlays(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/site1/dice/disc", "val/mean/dice", "server/fsr/level4/normalised"} <= set(
        tags["scalars"]
    )
    assert [e.step for e in events.Scalars("val/site2/dice")] == [1, 2]
    assert {"overlays/site1", "overlays/site2"} <= set(tags["images"])
    assert events.Images("overlays/site1")[-1].encoded_image_string.startswith(PNG)


def test_plots_are_valid_pngs_and_curves_can_be_redrawn(run):
    from PIL import Image

    from fedbcs_lightning.reporting.plots import write_dice_curves

    for name in ("dice_curves.png", "overlays.png"):
        path = run.dir / "plots" / name
        assert path.read_bytes().startswith(PNG)
        with Image.open(path) as image:
            image.verify()
    curves = run.dir / "plots" / "dice_curves.png"
    curves.unlink()
    assert write_dice_curves(run.dir) == curves and curves.read_bytes().startswith(PNG)


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    import torch

    from fedbcs_lightning.api import resume

    with contextlib.redirect_stdout(io.StringIO()):
        fit(tiny(rounds=1, loggers=["wandb"], log_images=0), run_dir=tmp_path, progress=False)
        state = torch.load(tmp_path / "checkpoints" / "state.pt", weights_only=True)
        run_id = state["trainer"]["callbacks"]["WandbLogger"]["run_id"]
        assert run_id
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        resume(tmp_path, rounds=2, progress=False)
    files = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one per process, the same run
    sync = printed.getvalue().split("wandb sync ", 1)[1]
    assert all(str(path.parent) in sync for path in files)  # the command uploads both
    ids = {
        r.run.run_id
        for path in files
        for r in finished_records(path)
        if r.WhichOneof("record_type") == "run"
    }
    assert ids == {run_id}


def test_a_resumed_tensorboard_file_sorts_after_the_interrupted_one(tmp_path):
    import time

    from fedbcs_lightning.callbacks.loggers import _after_existing_event_files

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.99999.0").write_bytes(b"")
    _after_existing_event_files(tmp_path)
    assert int(time.time()) > now  # a file created now gets a later name
