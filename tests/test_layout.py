"""The package layout: old module paths still import (as the same module objects), pickles
that name them still load, and the subpackages import each other one way, without circles."""
import ast
import importlib
import pickle
from pathlib import Path

import pytest

import vlrnn

ROOT = Path(__file__).resolve().parent.parent / "vlrnn"


@pytest.mark.parametrize("old, new", sorted(vlrnn._MOVED.items()))
def test_old_module_paths_are_the_new_modules(old, new):
    module = importlib.import_module(f"vlrnn.{new}")
    assert importlib.import_module(f"vlrnn.{old}") is module
    assert getattr(vlrnn, old) is module
    assert module.__name__ == f"vlrnn.{new}"


def test_old_from_imports():
    from vlrnn.bptt import block_loss, full_backward
    from vlrnn.pipeline import TrainedModel
    from vlrnn.schedules import SCHEDULES
    from vlrnn.trainer import Trainer, predict_blocks

    assert (block_loss, full_backward, TrainedModel, SCHEDULES, Trainer) == (
        vlrnn.block_loss, vlrnn.full_backward, vlrnn.TrainedModel, vlrnn.SCHEDULES,
        vlrnn.Trainer)
    assert predict_blocks is vlrnn.training.predict.predict_blocks
    assert vlrnn.schedules.SCHEDULES is vlrnn.SCHEDULES  # the path DESIGN names


def test_pickles_naming_old_modules_load():
    """A class pickled before the move is named by its old module (protocol 2 writes the
    name as text, so the old stream can be made by renaming the new one)."""
    from vlrnn.engine.schedules import TwoLevel
    from vlrnn.training.trained import Scalers

    for cls, old in ((vlrnn.Blockwise, "vlrnn.blockwise"), (TwoLevel, "vlrnn.schedules"),
                     (Scalers, "vlrnn.trained"), (vlrnn.TimeBlock, "vlrnn.blocks")):
        data = pickle.dumps(cls, protocol=2)
        assert cls.__module__.encode() in data
        assert pickle.loads(data.replace(cls.__module__.encode(), old.encode())) is cls


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

    assert uses("vlrnn.data") == set()
    assert uses("vlrnn.models") == set()
    # the engine asks models what it needs through protocols (NOTE [direction views])
    assert uses("vlrnn.engine") == set()
    assert "vlrnn.cli" not in uses("vlrnn.training")
