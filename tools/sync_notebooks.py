"""Write each notebooks/0*.ipynb from its jupytext source 0*.py (``make notebooks``), the way
JupyterLab saves a paired notebook: through jupytext's contents manager, with the notebooks'
configuration (notebooks/jupytext.toml) and the ipykernel kernel. So a notebook saved unchanged
in JupyterLab is byte for byte what this writes. Cell ids and outputs of an existing .ipynb are
kept (the committed ones have no outputs); a new source gets a new .ipynb.

    python tools/sync_notebooks.py [NAME ...]      # default: every notebooks/0*.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from jupytext import TextFileContentsManager

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def sync(names: list[str]) -> None:
    manager = TextFileContentsManager(root_dir=str(NOTEBOOKS))
    for name in names:
        model = manager.get(name)  # the .py's cells, with the paired .ipynb's ids and outputs
        notebook = model["content"]
        notebook["metadata"]["kernelspec"] = dict(KERNELSPEC)
        manager.save({"type": "notebook", "content": notebook, "format": "json"},
                     str(Path(name).with_suffix(".ipynb")))
        print(f"wrote notebooks/{Path(name).with_suffix('.ipynb')}")


if __name__ == "__main__":
    sync(sys.argv[1:] or sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")))
