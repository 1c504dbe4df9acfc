"""The package's layers import one way only (knlab/__init__.py lists them): read from the source, every
import counted, the ones inside functions too (a lazy import hides an edge of the graph, it does not remove
it)."""

from __future__ import annotations

import ast
from pathlib import Path

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
# Entry points sit above everything: ``python -m knlab`` (the CLI) and ``python -m knlab.world`` (the
# organisms' command under its old name); knlab/__init__.py is the facade.
ENTRY_POINTS = {"knlab/__init__.py", "knlab/__main__.py", "knlab/world/__main__.py"}


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
    wrong = []
    for path in sorted(KNLAB.rglob("*.py")):
        rel = str(path.relative_to(KNLAB.parent))
        if rel in ENTRY_POINTS:
            continue
        layer = rel.split("/")[1]
        for line, module in knlab_imports(path):
            target = layer_of(module)
            assert target is not None, f"{rel}:{line} imports {module}, which is in no layer (an old path?)"
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{rel}:{line} ({layer}) imports {module} ({target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The checker itself: a lazy import of a study from inside a method's function is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from knlab.studies.edit import edit\n    import knlab.app.ui\n")
    assert [layer_of(m) for _, m in knlab_imports(p)] == ["studies", "app"]
