"""The notebooks run top to bottom as Jupyter runs them, and are committed without outputs."""

import importlib.util
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from updown_vqa.core.paths import project_root

NOTEBOOKS = os.path.join(project_root(), "notebooks")
NAMES = ["01_quickstart.ipynb", "02_attention.ipynb", "03_loader_sweep.ipynb"]
PICTURES = {"01_quickstart.ipynb": 1, "02_attention.ipynb": 6, "03_loader_sweep.ipynb": 1}  # at least


def read(folder: str, name: str):
    return nbformat.read(os.path.join(folder, name), as_version=4)


def test_notebooks_are_committed_without_outputs():
    assert sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb")) == NAMES
    for name in NAMES:
        for cell in read(NOTEBOOKS, name).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear its outputs"


def test_notebooks_are_what_their_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_notebooks", os.path.join(NOTEBOOKS, "make_notebooks.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for name, cells in generator.NOTEBOOKS.items():
        generator.write(name, cells, str(tmp_path))
        assert read(str(tmp_path), name) == read(NOTEBOOKS, name), \
            f"{name} differs from notebooks/make_notebooks.py: edit the generator and rerun it"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> str:
    """Where the notebooks put their data and runs: one folder, so later notebooks reuse the data."""
    return str(tmp_path_factory.mktemp("notebooks"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, work_dir, monkeypatch):
    monkeypatch.setenv("UPDOWN_NOTEBOOKS_DIR", work_dir)
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # this environment's python3 kernel before a user's
    notebook = read(NOTEBOOKS, name)
    notebook.cells.insert(0, new_code_cell(f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"))
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failure
    pictures = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                if "image/png" in o.get("data", {})]
    assert len(pictures) >= PICTURES[name]
