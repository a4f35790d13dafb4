"""Real SIGKILLs at the dangerous points of a run, then ``resume``: the run ends as one that
was never interrupted, bitwise (weights, metrics, summary), and every logger holds every
round exactly once."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from fedbcs_lightning.api import fit, resume
from fedbcs_lightning.config import resolve

OPTIONS = {
    "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 8}},
    "model": {"width": 4},
    "train": {"method": "fedbcs", "rounds": 3, "batch_size": 4},
    "fedbcs": {"cdpa": True, "prototype_dim": 8},
    "run": {"log_images": 0, "loggers": ["csv", "tensorboard"]},
}
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}

# Code run in the child before ``fit``: each stops the process with SIGKILL at one point.
KILLS = {
    # after round 2's state is saved (the loggers wrote round 2 before it)
    "after-state": """
        from fedbcs_lightning.callbacks.builtin import CheckpointWriter
        save = CheckpointWriter.on_round_end
        def on_round_end(self, trainer, server_round, record):
            save(self, trainer, server_round, record)
            if server_round == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        CheckpointWriter.on_round_end = on_round_end
    """,
    # half-way through writing round 2's state.pt
    "mid-write": """
        from fedbcs_lightning.callbacks import builtin
        from fedbcs_lightning.io import atomic_write
        save = builtin.atomic_torch_save
        def half_then_die(handle):
            handle.write(b"partial" * 1000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        def atomic_torch_save(path, obj, **options):
            if path.name == "state.pt" and obj["trainer"]["round"] == 2:
                return atomic_write(path, half_then_die)
            return save(path, obj, **options)
        builtin.atomic_torch_save = atomic_torch_save
    """,
    # during the final test evaluation, after the last round's state is saved
    "final-test": """
        from fedbcs_lightning.federation.trainer import FederatedTrainer
        evaluate = FederatedTrainer.evaluate
        def dying_evaluate(self, weights, split, surface_metrics=False):
            if split == "test":
                os.kill(os.getpid(), signal.SIGKILL)
            return evaluate(self, weights, split, surface_metrics)
        FederatedTrainer.evaluate = dying_evaluate
    """,
}


def child(run_dir, kill: str = "") -> list[str]:
    code = (
        "import os, signal\n"
        + textwrap.dedent(kill)
        + textwrap.dedent(
            f"""
        from fedbcs_lightning.api import fit
        from fedbcs_lightning.config import resolve
        fit(resolve(options={OPTIONS!r}), run_dir={str(run_dir)!r}, progress=False)
        """
        )
    )
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return fit(resolve(options=OPTIONS), run_dir=tmp_path_factory.mktemp("ref"), progress=False)


def scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_same_run(run_dir, reference):
    ref = reference.run_dir
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    expected = reference.result.last_weights
    assert last.keys() == expected.keys()
    assert all(torch.equal(last[k], v) for k, v in expected.items())
    for name in ("metrics.jsonl", "metrics.csv", "summary.json"):
        assert (run_dir / name).read_text() == (ref / name).read_text(), name
    got, want = scalars(run_dir), scalars(ref)
    assert got == want
    assert [step for step, _ in got["val/mean/dice"]] == [1, 2, 3]  # each round once
    leftovers = [p for p in run_dir.rglob("*.tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("point", sorted(KILLS))
def test_a_kill_at_a_dangerous_point_then_resume_gives_the_uninterrupted_run(
    point, reference, tmp_path
):
    run_dir = tmp_path / "run"
    done = subprocess.run(child(run_dir, KILLS[point]), env=ENV, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (run_dir / "summary.json").exists()
    if point == "mid-write":
        assert list((run_dir / "checkpoints").glob(".state.pt.*.tmp"))  # the killed write's
    resume(run_dir, progress=False)
    assert_same_run(run_dir, reference)


def saved_round(run_dir) -> int:
    try:
        state = torch.load(run_dir / "checkpoints" / "state.pt", weights_only=True)
        return state["trainer"]["round"]
    except Exception:  # not there yet, or being replaced right now
        return 0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_kill_at_a_random_moment_then_resume_gives_the_uninterrupted_run(
    seed, reference, tmp_path
):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(child(run_dir), env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while saved_round(run_dir) < 1 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))  # somewhere in rounds 2-3 or the end
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not (run_dir / "summary.json").exists() or saved_round(run_dir) < 3:
        resume(run_dir, progress=False)
    assert_same_run(run_dir, reference)
