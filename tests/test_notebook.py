"""notebooks/tutorial.ipynb: committed without outputs, and it executes from top to bottom (in fast mode)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"
KERNEL = "mnistkit-test"


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs():
    nb = read_notebook()
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_notebook_walks_the_tutorial_in_order():
    source = "\n".join(cell.source for cell in read_notebook().cells if cell.cell_type == "code")
    steps = [
        "load_mnist()",
        "pyplot.imshow",
        "F.cross_entropy",
        "Mnist_NN()",
        "named_parameters()",
        "TensorDataset(",
        "get_data(",
        "get_model()",
        "fit(",
        "optim.AdamW",
        "train_run(",
        "CURVES_NAME",
        "write_evaluation_plots",
        "compare_figure",
        "ImageDraw",
        "Classifier.load()",
    ]
    positions = [source.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions) if p < 0]
    assert positions == sorted(positions)


def test_the_tutorials_own_code_is_shown_beside_what_replaces_it():
    """Its pickle loading, Mnist_NN, loss_batch, get_model and fit, each in a table beside the mnistkit call."""
    tables = [
        cell.source for cell in read_notebook().cells if cell.cell_type == "markdown" and "<table>" in cell.source
    ]
    pairs = [
        ('pickle.load(f, encoding="latin-1")', "load_mnist()"),
        ("class Mnist_NN(nn.Module):", "from mnistkit.tutorial import Mnist_NN"),
        (
            "def loss_batch(model, loss_func, xb, yb, opt=None):",
            "from mnistkit.tutorial import fit, get_model, loss_batch",
        ),
        ("def fit(steps, model, loss_func, opt, train_dl, valid_dl):", "mnistkit train --preset tutorial"),
    ]
    for tutorial, mnistkit in pairs:
        table = next((t for t in tables if tutorial in t), None)
        assert table is not None, tutorial
        left, right = table.split("</td><td")
        assert tutorial in left and mnistkit in right


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel that runs this very interpreter (the project's venv), in fast mode, whatever kernels are installed."""
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mnistkit test",
        "language": "python",
        # One thread: the test machine's few cores are shared with the test process itself.
        "env": {
            "MNISTKIT_NOTEBOOK_FAST": "1",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "OMP_NUM_THREADS": "1",
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    )


def test_notebook_executes(tmp_path: Path):
    nb = read_notebook()
    km = kernel_manager(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(work)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "fast mode" in text
    assert "当前step:1" in text  # the tutorial's fit ran its 2 fast-mode epochs
    assert "test accuracy" in text and "predicted 7" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # imshow, grid, SGD vs AdamW, curves, confusion, mistakes, compare, the drawing, what the model saw
    assert len(images) == 9
    # The notebook's runs went to the working folder given to the kernel, and are complete.
    for run in ("notebook-cnn", "notebook-tutorial"):
        assert {"config.json", "metrics.csv", "model.json", "model.safetensors", "curves.png"} <= {
            p.name for p in (work / "runs" / run).iterdir()
        }
    assert (work / "runs" / "notebook-cnn" / "confusion.png").is_file()

    # the comparison table fits a notebook's width and shows only what applies: no momentum for AdamW
    compare_cell = next(cell for cell in nb.cells if "compare.format_table" in cell.source)
    table = "".join(out.get("text", "") for out in compare_cell.outputs if out.output_type == "stream")
    assert 0 < max(len(line) for line in table.splitlines()) <= 80
    momentum = next(line.split() for line in table.splitlines() if line.startswith("momentum"))
    assert momentum == ["momentum", "0.0", "-"]  # the tutorial's SGD, then the convnet's AdamW
