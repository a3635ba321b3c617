"""The package layout: no aliases for old module paths, and the subpackages import each
other one way, without circles."""
import ast
import importlib
import re
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
    assert importlib.import_module("vlrnn.engine._schedules").SCHEDULES is vlrnn.SCHEDULES
    for old in ("engine.bptt", "engine.schedules", "training.trainer", "data.frame",
                "models.stacked", "cli.commands", "estimators"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"vlrnn.{old}")


# the modules a user imports: the packages, and these; every other module is internal
PUBLIC_MODULES = {"vlrnn.memory", "vlrnn.aeon", "vlrnn.sktime", "vlrnn.__main__",
                  "vlrnn.cli.demo", "vlrnn.cli.recall"}


def _module_names():
    return sorted(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
                  for p in ROOT.rglob("*.py"))


def test_internal_modules_are_underscored():
    """What is public is visible: a module is a package's ``__init__``, one of the few
    public modules, or its name (or its package's) starts with an underscore."""
    public_looking = [
        name for name in _module_names()
        if not name.endswith("__init__") and name not in PUBLIC_MODULES
        and not any(part.startswith("_") for part in name.split(".")[1:])]
    assert public_looking == [], f"internal modules without an underscore: {public_looking}"


@pytest.mark.parametrize("name", ["vlrnn", "vlrnn.engine", "vlrnn.training", "vlrnn.data",
                                  "vlrnn.models", "vlrnn.cli", *sorted(PUBLIC_MODULES - {"vlrnn.__main__"})])
def test_public_modules_export_explicitly(name):
    """Each public module lists its names in ``__all__``: every one exists, none is
    private, and nothing public-looking it defines itself is left out."""
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # aeon / sktime adapters without their extra
        pytest.skip(f"{name}: {err}")
    exported = module.__all__
    assert [n for n in exported if n.startswith("_")] == [], name
    assert [n for n in exported if not hasattr(module, n)] == [], name
    assert len(set(exported)) == len(exported), name
    if not hasattr(module, "__path__"):  # a module, not a package: its own definitions
        own = [n for n, obj in vars(module).items() if not n.startswith("_")
               and getattr(obj, "__module__", None) == name and callable(obj)]
        assert sorted(set(own) - set(exported)) == [], name


def _runtime_imports(tree):
    """The import statements that run: those under ``if TYPE_CHECKING:`` are for
    annotations only and make no circle."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


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
        for node in _runtime_imports(ast.parse(path.read_text())):
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


def test_the_module_map_matches_the_code():
    """docs/guides/how-it-works.md names every module, and every module it names exists."""
    text = (ROOT.parent / "docs" / "guides" / "how-it-works.md").read_text()
    files = {p.name for p in ROOT.rglob("*.py") if p.name != "__init__.py"}
    assert sorted(f for f in files if f not in text) == []
    named = set(re.findall(r"(?<![\w/.])(_[a-z][a-z0-9_]*\.py)\b", text))  # internal ones
    assert sorted(named - files) == []
