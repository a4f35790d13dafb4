import os
import signal

import pytest
import torch

from fedbcs_lightning.io import atomic_write, atomic_write_text


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "file.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, as in a process started from a terminal (a background
    job starts with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_during_a_write_takes_effect_once_the_file_is_in_place(tmp_path, ctrl_c_raises):
    target = tmp_path / "state.pt"

    def write(handle):
        handle.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends, mid-write
        handle.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_bytes() == b"first half second half"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def save(handle):  # torch.save's zip writer would fail if cut off
        os.kill(os.getpid(), signal.SIGINT)
        torch.save({"x": torch.ones(3)}, handle)

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, save)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(3))


def test_a_save_without_checksums_loads_the_same_and_leaves_the_setting_alone(tmp_path):
    import zipfile

    import torch

    from fedbcs_lightning.io import atomic_torch_save, load_checkpoint

    obj = {"state_dict": {"w": torch.arange(1000.0)}, "round": 3}
    atomic_torch_save(tmp_path / "with.pt", obj)
    atomic_torch_save(tmp_path / "without.pt", obj, checksums=False)
    for name in ("with.pt", "without.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert torch.equal(loaded["state_dict"]["w"], obj["state_dict"]["w"])
        assert loaded["round"] == 3
    crcs = {
        name: [i.CRC for i in zipfile.ZipFile(tmp_path / name).infolist() if i.file_size > 100]
        for name in ("with.pt", "without.pt")
    }
    assert all(crcs["with.pt"]) and not any(crcs["without.pt"])
    atomic_torch_save(tmp_path / "again.pt", obj)  # the default is restored
    assert all(
        i.CRC for i in zipfile.ZipFile(tmp_path / "again.pt").infolist() if i.file_size > 100
    )
