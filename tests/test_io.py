import os

from fedbcs_lightning.io import atomic_write_text


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "file.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
