"""The package layout: no aliases for old module paths, and the subpackages import each
other one way, without circles."""
import ast
import importlib
from pathlib import Path

import pytest

import vlrnn

ROOT = Path(__file__).resolve().parent.parent / "vlrnn"


def test_no_aliases_for_old_module_paths():
    """The modules live in their subpackages only: an old flat path does not import."""
    for old in ("bptt", "schedules", "trainer", "pipeline", "checkpoint", "demo"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"vlrnn.{old}")
    assert not hasattr(vlrnn, "_MOVED")
    assert importlib.import_module("vlrnn.engine.schedules").SCHEDULES is vlrnn.SCHEDULES


def _imports():
    """{module: vlrnn modules it imports (at any level)}, from the source."""
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    edges = {}
    for name, (path, is_pkg) in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = node.module or "" if node.level == 0 else ".".join(
                    pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in mods else base)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        edges[name] = {t for t in out if t in mods and t != name}
    return edges, {n for n, (_, is_pkg) in mods.items() if is_pkg}


def test_no_import_circles_and_one_way_subpackages():
    edges, packages = _imports()
    # a package's __init__ importing its own modules is no circle: leave packages out
    graph = {m: {t for t in ts if t not in packages} for m, ts in edges.items()
             if m not in packages}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            assert state.get(t) != "open", "import circle: " + " -> ".join(path + [t])
            if t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])

    def uses(sub):
        return {".".join(t.split(".")[:2]) for m, ts in edges.items()
                if m.startswith(sub + ".") for t in ts} - {sub, "vlrnn"}

    leaf = {"vlrnn._common"}  # the shared rules: imports nothing from vlrnn
    assert edges["vlrnn._common"] == set()
    assert uses("vlrnn.data") <= leaf
    assert uses("vlrnn.models") <= leaf
    assert uses("vlrnn.engine") <= leaf  # the engine asks models through protocols
    assert "vlrnn.cli" not in uses("vlrnn.training")
