"""The quick-start notebook runs top to bottom on the CPU (nbclient, kernel "python3")."""

import pathlib
import time

import pytest

from jaxcxr import checkpoints

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
# Seconds allowed for the whole notebook (about 35 s on one busy CPU core, most of it compiling) and for one cell.
NOTEBOOK_TIMEOUT = 240
CELL_TIMEOUT = 180


@pytest.mark.slow
@pytest.mark.skipif(not (checkpoints.checkpoints_root() / "gan_256" / "generator").exists(),
                    reason="the shipped checkpoints are not there")
def test_quickstart_notebook_runs_without_errors(monkeypatch):
  monkeypatch.delenv("JAXCXR_EXAMPLE_DATA", raising=False)   # the notebook's default: the fixture, next to it
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  start = time.perf_counter()
  client.execute()   # raises CellExecutionError on the first cell that fails
  seconds = time.perf_counter() - start
  assert seconds < NOTEBOOK_TIMEOUT, f"the notebook took {seconds:.0f} s"

  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert all(cell.execution_count for cell in code), "a cell did not run"
  outputs = [output for cell in code for output in cell.outputs]
  assert not [output for output in outputs if output.output_type == "error"]
  text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
  assert "4 valid images" in text and text.count("f-AnoGAN score") == 2
  figures = [output for output in outputs if "image/png" in output.get("data", {})]
  assert len(figures) == 2   # the samples and the residuals
