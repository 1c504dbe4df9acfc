"""The package's layers import one way only (knlab/__init__.py lists them): read from the source, every
import counted, the ones inside functions too (a lazy import hides an edge of the graph, it does not remove
it); and at run time, importing a layer loads nothing of a layer it may not import (the package's own
``__init__`` included, which is where an eager facade would pull the top layers into every process)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

KNLAB = Path(__file__).resolve().parents[1] / "knlab"

# What each layer may import besides itself. The data never imports a method; methods never import the
# studies, the organisms, serving or the app; serving needs only the foundations (it runs any function).
ALLOWED = {
    "core": set(),
    "world": {"core"},
    "methods": {"core"},
    "studies": {"core", "world", "methods"},
    "organisms": {"core", "world", "methods", "studies"},
    "serve": {"core"},
    "app": {"core", "world", "methods", "studies", "organisms", "serve"},
}
# The entry points and what each may import: ``python -m knlab`` is the CLI (the app's); knlab/__init__.py,
# the facade, names its API as strings it imports on first use, so it imports no layer at all.
ENTRY_POINTS = {"knlab/__init__.py": set(), "knlab/__main__.py": {"app"}}


def knlab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every ``import knlab...`` / ``from knlab... import`` in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "knlab":
            if node.module == "knlab":
                out += [(node.lineno, f"knlab.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "knlab"]
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_module_sits_in_a_layer():
    loose = [str(p.relative_to(KNLAB.parent)) for p in KNLAB.glob("*.py")
             if str(p.relative_to(KNLAB.parent)) not in ENTRY_POINTS]
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in KNLAB.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ALLOWED)


def test_imports_run_one_way():
    """Every module, ``__main__`` modules and the entry points included (an entry point may import only
    the layers it names)."""
    wrong = []
    for path in sorted(KNLAB.rglob("*.py")):
        rel = str(path.relative_to(KNLAB.parent))
        layer = rel.split("/")[1] if rel not in ENTRY_POINTS else rel
        allowed = ENTRY_POINTS[rel] if rel in ENTRY_POINTS else ALLOWED[layer]
        for line, module in knlab_imports(path):
            target = layer_of(module)
            assert target is not None, f"{rel}:{line} imports {module}, which is in no layer (an old path?)"
            if target != layer and target not in allowed:
                wrong.append(f"{rel}:{line} ({layer}) imports {module} ({target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The checker itself: a lazy import of a study from inside a method's function is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from knlab.studies.edit_report import edit\n    import knlab.app.ui\n")
    assert [layer_of(m) for _, m in knlab_imports(p)] == ["studies", "app"]


def layer_modules(layer: str) -> list[str]:
    """Every module of a layer, ``__main__`` modules left out (running them is not importing them)."""
    out = []
    for path in sorted((KNLAB / layer).rglob("*.py")):
        parts = list(path.relative_to(KNLAB.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def loaded_after_importing(modules: list[str]) -> subprocess.Popen:
    """A fresh interpreter that imports the modules and prints the sorted names in sys.modules."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=KNLAB.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> set[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return set(json.loads(out))


def test_the_lowest_module_loads_nothing_above_it():
    """``import knlab.core.errors`` runs knlab/__init__.py first: that must not load torch, the worker or
    any layer but core (the API's names wait until they are asked for)."""
    loaded = finish(loaded_after_importing(["knlab.core.errors"]))
    assert "torch" not in loaded and "knlab.serve" not in loaded
    assert {m for m in loaded if m.startswith("knlab.")} == {"knlab.core", "knlab.core.errors"}


def test_the_api_names_load_on_first_use():
    import knlab
    assert set(knlab.__all__) <= set(dir(knlab))
    assert knlab.predict is importlib.import_module("knlab.methods.predict").predict  # the function, not the module
    with pytest.raises(AttributeError, match="no attribute 'trace'"):
        knlab.trace  # noqa: B018  (an old flat path is no name of the package)


@pytest.mark.slow  # a Python process per layer (~14 s): the import graph test above checks the same rule statically
def test_importing_a_layer_loads_no_layer_it_may_not_import():
    """Each layer's every module imported in a fresh process (the layers side by side, one process each):
    nothing of a layer outside ALLOWED is loaded. The app may import everything, so it is not run."""
    layers = [layer for layer in ALLOWED if set(ALLOWED) - ALLOWED[layer] - {layer}]
    procs = {layer: loaded_after_importing(layer_modules(layer)) for layer in layers}
    wrong = []
    for layer, proc in procs.items():
        for module in sorted(finish(proc)):
            target = layer_of(module)
            if target is not None and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"importing {layer} loaded {module} ({target})")
    assert not wrong, "\n".join(wrong)


def module_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package under ``root`` -> the package's modules it imports (``from a import b``
    counted as a.b where b is a module)."""
    names = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                graph[name] |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                                for a in node.names}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in names}
        graph[name].discard(name)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order, the first again at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if not state.get(nxt) and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if not state.get(node) and (found := visit(node, [])):
            return found
    return None


def test_no_module_imports_back():
    """Within a layer too, data flows one way: a study's modules (relation_evaluation -> edit_report ->
    probes -> known_facts) never import a module that imports them."""
    cycle = import_cycle(module_graph(KNLAB))
    assert cycle is None, "modules importing each other: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert import_cycle(module_graph(pkg)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("")
    assert import_cycle(module_graph(pkg)) is None
