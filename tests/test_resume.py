"""Exact resume: a run killed mid-way and resumed ends bitwise identical to one that
was never interrupted."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from fedbcs_lightning.api import ResumeError, fit, resume
from fedbcs_lightning.config import resolve
from tests.helpers import StopBefore

SETS = [
    "model.width=4",
    "data.synthetic.sites=2",
    "data.synthetic.images_per_site=8",
    "train.batch_size=4",
    "run.log_images=0",
    "fedbcs.cdpa=true",
]
OPTIONS = {
    "data": {"name": "synthetic", "image_size": 32},
    "train": {"method": "fedbcs", "rounds": 4},
}


def _config(rounds=4, method="fedbcs"):
    options = {**OPTIONS, "train": {"method": method, "rounds": rounds}}
    return resolve(overrides=SETS, options=options)


def _cli(run_dir, *extra):
    command = [sys.executable, "-m", "fedbcs_cli.main", "fit", *extra]
    if not extra or extra[0] != "--resume":
        command += ["--dataset", "synthetic", "--method", "fedbcs", "--rounds", "4"]
        command += ["--image-size", "32", "--output", str(run_dir)]
        command += [arg for s in SETS for arg in ("--set", s)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    return command, env


def _saved_round(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["trainer"]["round"]
    except Exception:  # being replaced right now
        return 0


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_killed_and_resumed_run_is_bitwise_identical(tmp_path):
    reference = fit(_config(), run_dir=tmp_path / "reference", progress=False)

    run_dir = tmp_path / "killed"
    command, env = _cli(run_dir)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    state = run_dir / "checkpoints" / "state.pt"
    deadline = time.monotonic() + 300
    while not (state.is_file() and _saved_round(state) >= 2):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up runs
    process.wait()
    killed_at = _saved_round(state)
    assert 2 <= killed_at < 4
    assert not (run_dir / "checkpoints" / "last.pt").exists()

    command, env = _cli(run_dir, "--resume", str(run_dir))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    resumed = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    expected = reference.result.last_weights
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key
    assert _rows(run_dir) == _rows(tmp_path / "reference")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "reference" / "summary.json").read_text())


def test_resume_extends_a_finished_run_and_refuses_without_more_rounds(tmp_path):
    fit(_config(rounds=1, method="fedavg"), run_dir=tmp_path, progress=False)
    with pytest.raises(ResumeError, match="already finished round 1 of 1"):
        resume(tmp_path, progress=False)
    run = resume(tmp_path, rounds=2, progress=False)
    assert [r["round"] for r in run.result.history] == [1, 2]
    straight = fit(
        _config(rounds=2, method="fedavg"), run_dir=tmp_path / "straight", progress=False
    )
    for key, value in straight.result.last_weights.items():
        assert torch.equal(run.result.last_weights[key], value), key


def test_runs_with_loader_workers_resume_exactly(tmp_path):
    def config(rounds):
        return resolve(
            overrides=[*SETS, "data.num_workers=2"],
            options={**OPTIONS, "train": {"method": "fedavg", "rounds": rounds}},
        )

    fit(config(1), run_dir=tmp_path / "resumed", progress=False)
    run = resume(tmp_path / "resumed", rounds=3, progress=False)
    straight = fit(config(3), run_dir=tmp_path / "straight", progress=False)
    for key, value in straight.result.last_weights.items():
        assert torch.equal(run.result.last_weights[key], value), key


def test_resume_errors_name_the_problem(tmp_path):
    with pytest.raises(ResumeError, match="state.pt does not exist"):
        resume(tmp_path, progress=False)
    state = tmp_path / "checkpoints" / "state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="is not a fedbcs checkpoint"):
        resume(tmp_path, progress=False)


def test_cli_resume_refuses_other_options(tmp_path):
    from fedbcs_cli.main import app

    result = CliRunner().invoke(app, ["fit", "--resume", str(tmp_path), "--method", "fedavg"])
    assert result.exit_code == 2
    assert "drop --method" in result.output


def test_the_state_written_in_the_background_is_the_rounds_end(tmp_path, monkeypatch):
    from fedbcs_lightning.callbacks import builtin

    written = {}
    save = builtin.atomic_torch_save

    def slow_save(path, obj, **options):  # finishes long after the next round started
        time.sleep(1.0)
        written[obj["trainer"]["round"]] = obj["trainer"]["clients"]
        return save(path, obj, **options)

    monkeypatch.setattr(builtin, "atomic_torch_save", slow_save)
    cfg = _config(rounds=4, method="fedavg")
    with pytest.raises(KeyboardInterrupt):  # the end of a stopped fit waits for the write
        fit(cfg, run_dir=tmp_path / "stopped", callbacks=[StopBefore(4)], progress=False)
    assert _saved_round(tmp_path / "stopped" / "checkpoints" / "state.pt") == 3
    # round 2's saved optimiser moments are round 2's, though round 3 trained meanwhile
    monkeypatch.setattr(builtin, "atomic_torch_save", save)
    straight = fit(_config(rounds=2, method="fedavg"), tmp_path / "two", progress=False)
    saved = torch.load(straight.run_dir / "checkpoints" / "state.pt", weights_only=True)
    for name, client in saved["trainer"]["clients"].items():
        moments = client["optimizer"]["state"]
        for index, values in moments.items():
            stored = written[2][name]["optimizer"]["state"][index]
            assert all(torch.equal(stored[k], v) for k, v in values.items())


def test_a_failed_background_write_stops_the_fit_with_its_error(tmp_path, monkeypatch):
    from fedbcs_lightning.callbacks import builtin

    def full_disk(path, obj, **options):
        raise builtin_error

    builtin_error = OSError(28, "No space left on device")
    monkeypatch.setattr(builtin, "atomic_torch_save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fit(_config(rounds=2, method="fedavg"), run_dir=tmp_path, progress=False)
    assert not (tmp_path / "summary.json").exists()  # not marked finished


@pytest.mark.parametrize("background", [True, False])
def test_flower_servers_write_the_state_before_the_next_round(tmp_path, monkeypatch, background):
    """Flower sites drop states older than the server's last saved round, so a Flower
    server (``background=False``) has the state on disk before the next round starts."""
    import threading

    from fedbcs_lightning.callbacks import builtin

    save, writers = builtin.atomic_torch_save, []

    def recorded(path, obj, **options):
        writers.append(threading.current_thread() is threading.main_thread())
        return save(path, obj, **options)

    monkeypatch.setattr(builtin, "atomic_torch_save", recorded)
    from fedbcs_lightning.api import InProcess
    from fedbcs_lightning.federation.trainer import FederatedTrainer

    cfg = _config(rounds=2, method="fedavg")
    setup = InProcess().prepare(cfg)
    writer = builtin.CheckpointWriter(tmp_path, cfg.to_dict(), setup.data_info, 1, background)
    FederatedTrainer(setup.clients, setup.strategy, 2, [writer]).fit(setup.initial_weights)
    assert writers[:2] == [not background] * 2  # state.pt of rounds 1 and 2
    assert _saved_round(tmp_path / "checkpoints" / "state.pt") == 2
