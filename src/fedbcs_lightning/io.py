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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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


def atomic_write_path(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Like :func:`atomic_write` for writers that take a path rather than an open file
    (HDF5's own file driver): ``write(temporary_path)``, then rename it to ``path``."""

    def fill(temporary: str) -> None:
        write(Path(temporary))
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    with interrupts_deferred():
        return _replace(Path(path), fill)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    def fill(temporary: str) -> None:
        with open(temporary, "wb") as raw:
            write(_ErrorRecorder(raw, errors))
            raw.flush()
            os.fsync(raw.fileno())

    errors: list[OSError] = []
    return _replace(path, fill, errors)


class _ErrorRecorder:
    """A file whose failed writes are remembered: writers such as ``torch.save`` turn the
    ``OSError`` of a full disk into an unrelated error of their own."""

    def __init__(self, handle: IO[bytes], errors: list[OSError]) -> None:
        self._handle, self._errors = handle, errors

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self._errors.append(err)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _replace(path: Path, fill: Callable[[str], None], errors: list[OSError] | None = None) -> Path:
    """``fill`` a temporary file beside ``path`` and rename it over ``path``; on any error
    the temporary is removed and ``path`` is untouched. A full disk, however the writer
    reports it, raises :class:`DiskFullError` naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so a temporary left by a killed process can be told
    # from one still being written (see remove_stale_temporaries).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        fill(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(err, errors or []):
            raise disk_full_error(path) from None
        raise
    return path


def _disk_full(err: BaseException, recorded: list[OSError]) -> bool:
    """Whether ``err`` (or what caused it, or a write it swallowed) is a full disk."""
    seen: BaseException | None = err
    chain = list(recorded)
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    words = [os.strerror(code) for code in FULL]  # writers that keep only the message (HDF5)
    return any(
        (isinstance(e, OSError) and e.errno in FULL) or any(w in str(e) for w in words)
        for e in chain
    )


#: The errno values of a full disk (no space; over quota).
FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: Path) -> DiskFullError:
    """The one-line error of a write of ``path`` that found the disk full."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"the disk is full: {path} cannot be written ({free} in {path.parent}); nothing "
        "was half-written, so free some space and run the command again",
    )


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file and the free space."""

    def __str__(self) -> str:
        return str(self.strerror)


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
    weights = data["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise ValueError(f"checkpoint {str(path)!r}: its 'state_dict' is not a mapping of tensors")
    bad = non_finite(weights)
    if bad:
        shown = ", ".join(repr(k) for k in bad[:3]) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise ValueError(
            f"checkpoint {str(path)!r} holds non-finite weights (NaN or infinity in {shown}); "
            "refused: a model with them predicts nothing meaningful"
        )
    return data


def non_finite(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """The keys of the floating-point tensors that hold a NaN or an infinity, in order.

    One pass over every tensor at once: a tensor's largest absolute value (its infinity
    norm, through ``torch._foreach_norm``) is finite exactly when all of its values are.
    """
    import torch

    keys = [k for k, v in weights.items() if v.is_floating_point() and v.numel() > 0]
    if not keys:
        return []
    norms = torch._foreach_norm([weights[k] for k in keys], float("inf"))
    finite = torch.isfinite(torch.stack([n.float().cpu() for n in norms]))
    if bool(finite.all()):
        return []
    return [k for k, ok in zip(keys, finite.tolist(), strict=True) if not ok]
