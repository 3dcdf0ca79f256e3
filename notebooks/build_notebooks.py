"""Write the tutorial notebooks of ``notebooks/`` from their plain-Python sources.

Each notebook's source is a Python file in jupytext's percent format beside it
(``01_pick_an_sde_and_a_solver.py`` -> ``01_pick_an_sde_and_a_solver.ipynb``): ``# %%`` starts a
code cell, ``# %% [markdown]`` a text cell. The sources are linted with the rest of the code
(``ruff check .``) and share their helpers through ``notebooks/nb_helpers.py``. The notebooks are
committed without outputs. Edit a source, then run::

    python notebooks/build_notebooks.py            # rewrite the .ipynb files
    python notebooks/build_notebooks.py --check    # exit 1 if a committed notebook is stale

(``jupytext --sync`` is not needed: this script is the one writer, so the committed notebooks never
carry editor metadata.) Every notebook reads ``SCORE_SDE_NOTEBOOK_QUICK=1`` from the environment:
quick mode cuts training steps and sample sizes so that the test suite (``tests/test_notebooks.py``)
runs each one top to bottom in well under a minute. Each notebook ends by printing one
``SUMMARY {json}`` line with its key numbers, which the tests read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent

#: the notebooks, in reading order (sources: the same names with ``.py``)
NOTEBOOKS = ["01_pick_an_sde_and_a_solver.ipynb", "02_discrete_vs_continuous.ipynb",
             "03_likelihoods_through_the_ode.ipynb", "04_controllable_generation.ipynb"]


def source_path(name: str) -> Path:
    return HERE / Path(name).with_suffix(".py").name


def cells_of(name: str):
    """``[(kind, source)]`` of a notebook's percent-format source (kind ``"md"`` or ``"code"``)."""
    nb = jupytext.read(source_path(name), fmt="py:percent")
    return [("md" if c.cell_type == "markdown" else "code", c.source.strip("\n")) for c in nb.cells
            if c.source.strip()]


def build(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(cells_of(name))) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="write (or --check) the notebooks of notebooks/ from their .py sources")
    p.add_argument("--check", action="store_true", help="only check that the committed notebooks are up to date")
    args = p.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale notebooks (run python notebooks/build_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
