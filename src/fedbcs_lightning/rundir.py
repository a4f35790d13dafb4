"""Run directories: one process at a time, never mixed with another run or a user's files.

A fit or resume holds an exclusive lock (``.fedbcs.lock``, an OS file lock, released when
the process ends however it ends) for its whole life. A new fit refuses a folder that is
not empty unless told to ``overwrite`` it (then only the files a run writes are removed),
and tells how to continue a run that is already there. Temporaries that a killed write
left behind are removed when the next process takes the lock.

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp()) / "run"
>>> with lock_run_dir(folder):
...     (folder / "config.yaml").write_text("{}")
2
>>> check_new_run_dir(folder)
Traceback (most recent call last):
...
fedbcs_lightning.rundir.RunDirectoryError: ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from fedbcs_lightning.io import remove_stale_temporaries

LOCK_NAME = ".fedbcs.lock"
MARKER = ".fedbcs-run"  # written first by every run: its files may be replaced

#: Everything a run writes in its folder (files and folders).
RUN_FILES = (
    "config.yaml",
    "splits.json",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "report.html",
    "checkpoints",
    "plots",
    "tensorboard",
    "wandb",
)


class RunDirectoryError(Exception):
    """A run directory cannot be used as asked; the message says why and what to do."""


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "splits.json").is_file()


def check_new_run_dir(path: str | Path, overwrite: bool = False) -> None:
    """Raise :class:`RunDirectoryError` unless ``path`` can take a new run: it does not
    exist, is empty, or ``overwrite`` is given (and it is a folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--output {path} is a file, not a folder; choose a folder")
    contents = [p for p in path.iterdir() if p.name != LOCK_NAME] if path.is_dir() else []
    pid = lock_holder(path)
    if pid is not None:
        raise _in_use(path, pid)
    if overwrite:
        foreign = foreign_files(path)
        if foreign:
            raise _not_ours(path, foreign)
        return
    if not contents:
        return
    if (path / "checkpoints" / "state.pt").is_file():
        raise RunDirectoryError(
            f"{path} already holds a run. Continue it with `fedbcs fit --resume {path}` (add "
            "--rounds N to train longer), choose another --output, or pass --overwrite to "
            "replace it"
        )
    if is_run_dir(path):
        raise RunDirectoryError(
            f"{path} holds a run that stopped before completing a round; start it again with "
            "--overwrite, or choose another --output"
        )
    shown = ", ".join(sorted(p.name for p in contents)[:5])
    raise RunDirectoryError(
        f"{path} is not empty and is not a fedbcs run (it holds {shown}); choose another "
        "--output, or pass --overwrite to write the run there (only the files a run writes "
        "are replaced)"
    )


def mark_run_dir(path: str | Path) -> None:
    """Record that a run writes in ``path`` (:data:`MARKER`), before it writes anything
    else: what ``--overwrite`` may later replace."""
    from fedbcs_lightning.io import atomic_write_json

    atomic_write_json(Path(path) / MARKER, {"written_by": "fedbcs-lightning", "files": RUN_FILES})


def written_by_a_run(path: str | Path) -> bool:
    """Whether the run files in ``path`` are a run's: it holds :data:`MARKER`, or is a run
    folder of a version that wrote none (its ``config.yaml`` beside its ``splits.json``)."""
    return (Path(path) / MARKER).is_file() or is_run_dir(Path(path))


def foreign_files(path: str | Path) -> list[str]:
    """Files and folders in ``path`` with the names a run writes that no run wrote there
    (the user's own): ``--overwrite`` never replaces them."""
    path = Path(path)
    if not path.is_dir() or written_by_a_run(path):
        return []
    return [name for name in RUN_FILES if (path / name).exists() or (path / name).is_symlink()]


def clear_run_files(path: str | Path) -> None:
    """Remove what an earlier run wrote in ``path`` (and nothing else); a
    :class:`RunDirectoryError` if files of a run's names there are not a run's."""
    path = Path(path)
    foreign = foreign_files(path)
    if foreign:
        raise _not_ours(path, foreign)
    for name in (*RUN_FILES, MARKER):
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _not_ours(path: Path, foreign: list[str]) -> RunDirectoryError:
    return RunDirectoryError(
        f"{path} holds {', '.join(foreign)}, which no fedbcs run wrote; --overwrite replaces "
        "only the files of an earlier run, so move them or choose another --output"
    )


def lock_holder(path: str | Path) -> str | None:
    """The pid of another process holding ``path``'s lock, or ``None`` if it is free (or
    held by this process)."""
    import fcntl

    lock = Path(path) / LOCK_NAME
    if not lock.is_file():
        return None
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = handle.read().strip() or "unknown"
            return None if pid == str(os.getpid()) else pid
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _in_use(path: Path, pid: str) -> RunDirectoryError:
    return RunDirectoryError(
        f"{path} is in use by another fedbcs process (pid {pid}); wait for it to finish, or "
        "choose another --output"
    )


@contextlib.contextmanager
def lock_run_dir(path: str | Path) -> Iterator[Path]:
    """Create ``path`` if needed and hold its exclusive lock; :class:`RunDirectoryError`
    at once if another process holds it. Stale temporaries are removed once locked."""
    import fcntl

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / LOCK_NAME, "a+")  # noqa: SIM115 - held for the life of the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _in_use(path, handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        remove_stale_temporaries(path, recursive=True)
        yield path
    finally:
        handle.close()  # releases the lock
