"""Every ```python snippet of the README runs as written (in order, one namespace)."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # as a user runs them
    try:
        ns = {}
        for i, code in enumerate(blocks):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    finally:
        torch.set_default_dtype(old)


def test_readme_setup_commands_are_marked():
    text = README.read_text()
    for name in ("main", "test"):
        m = re.search(rf"<!-- ci:{name} -->\n```bash\n(.+)\n```", text)
        assert m, f"README lacks its ci:{name} command"
