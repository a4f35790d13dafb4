"""The quickstart notebook runs from top to bottom (on tiny settings)."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
TINY = """ROUNDS = 3
IMAGE_SIZE = 32
WIDTH = 4
SITES = 2
IMAGES_PER_SITE = 8
RUN_DIR = "runs/quickstart"
"""


def test_quickstart_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="notebook tools not installed")
    nbclient = pytest.importorskip("nbclient", reason="notebook tools not installed")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "the notebook needs one cell tagged 'parameters'"
    parameters[0].source = TINY
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # sites, curves, overlays, FSR weights
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test, model selected on validation" in text and "fsr/level2/normalised" in text
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "last.pt").is_file()
