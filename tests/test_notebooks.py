"""Execute every notebook in notebooks/ top to bottom with nbclient (`make notebooks`).

Each notebook is one test; a cell that raises fails it (nbclient raises CellExecutionError).
The notebooks are stored with their outputs stripped and are executed in memory: nothing is
written back, unless $NOTEBOOK_OUT names a folder, where the executed copies (outputs and
per-cell timings) are saved. The kernel is the interpreter running pytest (checked below), so
the notebooks see this virtualenv's interp_steer.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 600  # per cell; each notebook as a whole takes well under 2 min on 2 cores


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_kernel_is_this_interpreter():
    """The "python3" kernel must launch sys.executable (jupyter_client maps a bare "python"
    in the kernelspec to it), not some other Python found on the system."""
    cmd = KernelManager(kernel_name=KERNEL).format_kernel_cmd()
    assert os.path.samefile(cmd[0], sys.executable), (
        f"kernel {KERNEL!r} would run {cmd[0]}, not {sys.executable}: remove the stray "
        "kernelspec or run `python -m ipykernel install --sys-prefix`"
    )


def test_notebooks_are_stored_stripped():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path.name}: a cell has outputs; store notebooks stripped"
                )


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the kernel's working directory
    )
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    try:
        client.execute()  # raises CellExecutionError on the first cell that raises
    finally:
        out = os.environ.get("NOTEBOOK_OUT")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(out) / path.name)
    print(
        f"{path.name}: {time.perf_counter() - t0:.1f} s wall, "
        f"kernel CPU {_children_cpu_s() - cpu0:.1f} s"
    )
