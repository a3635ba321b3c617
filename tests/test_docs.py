"""The documentation site: every ```python block of every page under docs/ runs as
written (each page in order, in its own namespace, float32 as a user runs them), and
every page is in mkdocs.yml's nav."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
NEEDS = {"guides/lightning.md": ("lightning", "accelerate"),  # the test extra installs them
         "guides/aeon-sktime.md": ("aeon", "sktime")}


def python_blocks(page: Path):
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_snippets_run(page, monkeypatch, tmp_path):
    name = str(page.relative_to(DOCS))
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes (Lightning's folders) goes here
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        ns = {"__name__": f"docs_{page.stem}"}
        for i, code in enumerate(python_blocks(page)):
            exec(compile(code, f"docs/{name} python block {i + 1}", "exec"), ns)
    finally:
        torch.set_default_dtype(old)


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


def test_guides_have_code():
    # the guides teach by example: each has at least one block that the test above runs
    empty = [p.name for p in (DOCS / "guides").glob("*.md") if not python_blocks(p)]
    assert not empty, f"guides without a python block: {empty}"
