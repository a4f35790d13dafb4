"""Atomic file writes: a reader never sees a half-written file, an old one is never lost.

Each write goes to a temporary file in the target's folder and is renamed over the target
(``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then rename it to ``path``. A Ctrl-C
    during the write takes effect once the file is in place (:func:`interrupts_deferred`)."""
    with interrupts_deferred():
        return _atomic_write(Path(path), write)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then raise it: a write is never cut
    off half-way (torch.save, interrupted in its zip writer, raises an unrelated error and
    leaves the file unfinished). Only the main thread receives signals; elsewhere, and
    where SIGINT has a handler other than Python's default, the block runs as it is."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so a temporary left by a killed process can be told
    # from one still being written (see remove_stale_temporaries).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"{path}: cannot be written, no space left on the device ({free / 1e6:.1f} MB "
                f"free in {path.parent}); free some space and run the command again"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file and the free space."""


def remove_stale_temporaries(folder: str | Path, name: str = "", recursive: bool = False) -> None:
    """Delete temporaries of :func:`atomic_write` (of files called ``name``, or any) whose
    writing process no longer runs: what a killed write leaves behind."""
    folder = Path(folder)
    pattern = f".{name or '*'}.*{TEMP_SUFFIX}"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    for tmp in list(found):
        pid = tmp.name[: -len(TEMP_SUFFIX)].split(".")[-2]
        if not (pid.isdigit() and _alive(int(pid))):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any, checksums: bool = True) -> Path:
    """``torch.save`` through :func:`atomic_write`. ``checksums=False`` leaves out the zip
    records' CRC-32 (about half of the time a large save takes), which ``torch.load``
    never verifies: for files this library rewrites and reads back itself every round."""
    import torch

    def save(handle: IO[bytes]) -> None:
        with _zip_checksums(checksums):
            torch.save(obj, handle)

    return atomic_write(path, save)


@contextlib.contextmanager
def _zip_checksums(enabled: bool) -> Iterator[None]:
    try:
        from torch.utils.serialization import config
    except ImportError:  # torch < 2.5 always writes them
        yield
        return
    before = config.save.compute_crc32
    config.save.compute_crc32 = enabled
    try:
        yield
    finally:
        config.save.compute_crc32 = before


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by this library, safely (``weights_only=True``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # neither torch's zip nor pickle format
        raise ValueError(
            f"checkpoint {str(path)!r} is not a fedbcs checkpoint (not a file written by "
            "torch.save); pass a RUN/checkpoints/*.pt file"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable content: say which file, not a traceback
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain data, which are refused"
        raise ValueError(
            f"checkpoint {str(path)!r} is damaged or not a fedbcs checkpoint ({reason})"
        ) from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise ValueError(f"checkpoint {str(path)!r} has no 'state_dict'; not a fedbcs checkpoint")
    return data
