"""Execute every notebook in notebooks/ top to bottom with nbclient (`make notebooks`).

Each notebook is one test; a cell that raises fails it (nbclient raises CellExecutionError).
Each notebook asserts what it teaches (steered text differs, the controls behave, the SAE
reconstructs), and none may swallow an exception: both are checked statically below.
The notebooks are stored with their outputs stripped and are executed in memory: nothing is
written back, unless $NOTEBOOK_OUT names a folder, where the executed copies (outputs and
per-cell timings) are saved. The kernel is the interpreter running pytest (checked below), so
the notebooks see this virtualenv's interp_steer.
"""

from __future__ import annotations

import ast
import os
import resource
import sys
import time
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
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


def _code_tree(path: Path) -> ast.Module:
    """A notebook's code cells as one Python module (IPython syntax transformed away)."""
    nb = nbformat.read(path, as_version=4)
    tm = TransformerManager()
    return ast.parse(
        "\n".join(tm.transform_cell(c.source) for c in nb.cells if c.cell_type == "code"),
        filename=path.name,
    )


def _swallows(handler: ast.ExceptHandler) -> bool:
    """A bare ``except:`` or ``except (Base)Exception`` whose body never re-raises."""
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    broad = handler.type is None or any(
        isinstance(n, ast.Name) and n.id in ("Exception", "BaseException") for n in names
    )
    return broad and not any(isinstance(n, ast.Raise) for b in handler.body for n in ast.walk(b))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_asserts_and_swallows_nothing(path: Path):
    """A notebook that only runs proves little: it must assert its claims, and a broad
    ``except`` would turn a failure into printed text that CI never reads."""
    tree = _code_tree(path)
    assert any(isinstance(n, ast.Assert) for n in ast.walk(tree)), f"{path.name} asserts nothing"
    swallowed = [
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and _swallows(n)
    ]
    assert not swallowed, f"{path.name}: broad except without re-raise at lines {swallowed}"


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
