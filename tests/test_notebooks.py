"""The walkthrough: every notebook's .ipynb agrees with its jupytext source, is committed
without outputs, and runs top to bottom (its own cells assert the key shapes)."""

import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_saving_a_notebook_in_jupyterlab_leaves_the_tracked_files_unchanged():
    """Open each notebook (and its source) through jupytext's contents manager, as JupyterLab does,
    set the kernel JupyterLab sets, and save: no tracked file changes, and what saving adds
    (.ipynb_checkpoints/) is ignored by git. Files are restored afterwards whatever happens."""
    import subprocess

    from jupytext import TextFileContentsManager

    before = {p: p.read_bytes() for p in NOTEBOOKS.iterdir() if p.is_file()}
    manager = TextFileContentsManager(root_dir=str(NOTEBOOKS))
    try:
        for path in sorted(p for p in before if p.suffix in (".ipynb", ".py") and p.name[:2].isdigit()):
            notebook = manager.get(path.name)["content"]
            notebook["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                  "name": "python3"}
            manager.save({"type": "notebook", "content": notebook, "format": "json"}, path.name)
        changed = sorted(p.name for p in before if p.read_bytes() != before[p])
        new = [str(p) for p in NOTEBOOKS.rglob("*") if p.is_file() and p not in before]
    finally:
        for p, data in before.items():
            p.write_bytes(data)
    assert not changed, f"saving in JupyterLab rewrites {changed}: run `make notebooks`"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *new], cwd=NOTEBOOKS, capture_output=True,
                             text=True).stdout.split() if new else []
    assert sorted(ignored) == sorted(new), f"saving creates files git does not ignore: {set(new) - set(ignored)}"


def test_the_walkthrough_has_nine_notebooks():
    assert [p.stem[:2] for p in SOURCES] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_matches_its_jupytext_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks`"
    from_py = jupytext.read(source)
    committed = nbformat.read(ipynb, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(committed) == cells(from_py), f"{ipynb.name} differs from {source.name}: run `make notebooks`"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{ipynb.name} has outputs: run `make notebooks`"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source, tmp_path):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    env_note = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    os.environ.update(env_note)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    print(f"{source.stem}: {elapsed:.1f} s")
