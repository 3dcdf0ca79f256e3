"""The docs' "adding a ..." examples run as written (a new contributor follows them verbatim)."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_blocks(doc: str, section: str):
    """The ```python blocks of ``section`` (a level-2 heading) of ``docs/doc``."""
    text = (DOCS / doc).read_text()
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"docs/{doc} has no section '## {section}'"
    blocks = re.findall(r"```python\n(.*?)```", m.group(1), flags=re.S)
    assert blocks, f"docs/{doc} section '{section}' has no python example"
    return blocks


@pytest.mark.parametrize("doc,section", [("models.md", "Adding a network")])
def test_adding_example_runs(doc, section):
    from score_sde.models import MODELS

    before = dict(MODELS)
    try:
        for code in _python_blocks(doc, section):
            exec(compile(code, f"docs/{doc}::{section}", "exec"), {"__name__": "__docs__"})
    finally:
        MODELS.clear()
        MODELS.update(before)
