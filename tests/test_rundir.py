"""Run directories cannot be clobbered: a lock for the life of a fit, refusal of folders
that hold something else, no stub left by a failed start, no stale temporaries."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fedbcs_lightning.api import fit
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import DataError
from fedbcs_lightning.io import atomic_write_text, remove_stale_temporaries
from fedbcs_lightning.rundir import (
    MARKER,
    RunDirectoryError,
    check_new_run_dir,
    clear_run_files,
    lock_run_dir,
)

ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}


def tiny(rounds=1, **data):
    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 6}, **data},
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4},
            "run": {"log_images": 0},
        }
    )


def test_new_folders_and_empty_folders_are_accepted(tmp_path):
    check_new_run_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")


def test_a_folder_of_someone_elses_files_is_refused_and_overwrite_keeps_them(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(
        RunDirectoryError, match=r"not empty and is not a fedbcs run \(it holds notes.txt\)"
    ):
        check_new_run_dir(folder)
    run = fit(tiny(), run_dir=folder, progress=False, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (run.run_dir / "summary.json").is_file()


def test_a_finished_run_is_refused_with_the_resume_command(tmp_path):
    folder = tmp_path / "run"
    fit(tiny(), run_dir=folder, progress=False)
    with pytest.raises(RunDirectoryError, match=rf"fedbcs fit --resume {folder}"):
        fit(tiny(), run_dir=folder, progress=False)
    before = (folder / "summary.json").read_text()
    fit(tiny(rounds=2), run_dir=folder, progress=False, overwrite=True)
    assert (
        json.loads((folder / "summary.json").read_text())["rounds"]
        == 2
        != json.loads(before)["rounds"]
    )
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["round"] for line in lines} == {1, 2}  # nothing of the old run


def test_overwrite_removes_only_what_a_run_writes(tmp_path):
    for name in ("config.yaml", "summary.json", "checkpoints/state.pt", "mine.csv", MARKER):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_run_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv"]


def test_overwrite_never_replaces_the_users_own_files_of_a_runs_names(tmp_path):
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("my: settings\n")
    (folder / "checkpoints" / "last.pt").write_bytes(b"my model")
    with pytest.raises(RunDirectoryError, match=r"config.yaml, checkpoints, which no fedbcs run"):
        fit(tiny(), run_dir=folder, progress=False, overwrite=True)
    assert (folder / "config.yaml").read_text() == "my: settings\n"
    assert (folder / "checkpoints" / "last.pt").read_bytes() == b"my model"
    with pytest.raises(RunDirectoryError, match="no fedbcs run wrote"):
        clear_run_files(folder)
    assert (folder / "checkpoints" / "last.pt").is_file()


def test_overwrite_writes_beside_the_users_other_files_and_marks_the_run(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    fit(tiny(), run_dir=folder, progress=False, overwrite=True)
    assert (folder / MARKER).is_file() and (folder / "notes.txt").read_text() == "keep"
    fit(tiny(rounds=2), run_dir=folder, progress=False, overwrite=True)  # its own run: replaced
    assert json.loads((folder / "summary.json").read_text())["rounds"] == 2
    assert (folder / "notes.txt").read_text() == "keep"


def test_an_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a folder"):
        fit(tiny(), run_dir=target, progress=False)


def test_a_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(DataError):
        fit(
            tiny(name="nuclei", root=str(tmp_path / "nowhere")),
            run_dir=tmp_path / "run",
            progress=False,
        )
    assert not (tmp_path / "run").exists()


def write_sites(root, sites=("a", "b"), images=5, size=32):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for site in sites:
        for kind in ("images", "masks"):
            (root / site / kind).mkdir(parents=True)
        for i in range(images):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / site / "images" / f"{i}.png")
            Image.fromarray((image[..., 0] > 128).astype(np.uint8) * 255).save(
                root / site / "masks" / f"{i}.png"
            )


def test_the_data_root_is_stored_resolved(tmp_path, monkeypatch):
    write_sites(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    run = fit(tiny(name="sites", root="data", crops_per_image=1), run_dir="run", progress=False)
    saved = (run.run_dir / "config.yaml").read_text()
    assert f"root: {tmp_path / 'data'}" in saved


def test_the_lock_is_exclusive_across_processes(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from fedbcs_lightning.rundir import lock_run_dir
        with lock_run_dir({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(30)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunDirectoryError, match=rf"in use by another fedbcs process \(pid {process.pid}\)"
        ):
            with lock_run_dir(tmp_path):
                pass
    finally:
        process.kill()  # SIGKILL: the OS releases the lock
        process.wait()
    with lock_run_dir(tmp_path):
        pass


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / "checkpoints" / f".state.pt.{int(dead.stdout)}.abc123.tmp"
    live = tmp_path / f".metrics.csv.{os.getpid()}.def456.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    with lock_run_dir(tmp_path):
        pass
    assert not stale.exists() and live.exists()
    remove_stale_temporaries(tmp_path, "metrics.csv")
    assert live.exists()


def test_a_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    import errno

    from fedbcs_lightning.io import DiskFullError

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(
        DiskFullError, match=r"the disk is full: .*summary.json cannot be written .* MB free"
    ):
        atomic_write_text(tmp_path / "summary.json", "{}")
    assert list(tmp_path.iterdir()) == []  # no temporary left


def test_two_fits_on_one_folder_one_runs_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    command = [
        sys.executable,
        "-m",
        "fedbcs_cli.main",
        "fit",
        "--rounds",
        "2",
        "--image-size",
        "32",
    ]
    command += ["--clients", "2", "--set", "model.width=4", "--output", str(run_dir)]
    command += ["--set", "data.synthetic.images_per_site=8", "--set", "run.log_images=0"]
    first = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    second = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = [(p.wait(), p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    (refused,) = [err for code, (_, err) in results if code == 1]
    assert "in use by another fedbcs process" in refused or "already holds a run" in refused
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["round"], r["split"], r.get("site")) for r in rows]
    assert len(keys) == len(set(keys))  # one run's rows, each once
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2
