"""Imports run one way: library -> phases -> the table -> the runner -> studies, grid, sweep -> CLI.
Read from the code's own import statements (lazy ones and TYPE_CHECKING ones included), so that a
reader can follow a value top to bottom with "go to definition"."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "harness"

# Each module's layer, by the first prefix that names it; everything else is the library (data, models,
# train, generators, classifier code, tracking, compare, quality, config, context).
LAYERS = (("harness.cli", 5), ("harness.__main__", 5),
          ("harness.pipeline", 4), ("harness.studies", 4), ("harness.grid", 4), ("harness.sweep", 4),
          ("harness.runner", 3), ("harness.table", 2), ("harness.phases", 1))
NAMES = {0: "library", 1: "phases", 2: "table", 3: "runner", 4: "studies/grid/sweep", 5: "CLI"}


def layer(module: str) -> int:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return 0


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ["harness", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_a_layer_above_it():
    upward = [f"{m} ({NAMES[layer(m)]}) imports {i} ({NAMES[layer(i)]})"
              for m, targets in graph().items() for i in sorted(targets) if layer(i) > layer(m)]
    assert upward == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks above can fail: a made-up graph with a loop and a phase that reaches the runner."""
    g = {"harness.a": {"harness.b"}, "harness.b": {"harness.a"}, "harness.phases.x": {"harness.runner"},
         "harness.runner": set()}
    assert cycles(g) == [["harness.a", "harness.b"]]
    assert layer("harness.runner") > layer("harness.phases.x")
    assert "harness.phases.generate" in graph() and "harness.table" in graph()["harness.runner"]


def test_no_module_is_imported_by_a_literal_name():
    """A module loaded as importlib.import_module("harness.x") hides the edge from the checks above
    (and from the code fingerprints): what runs is imported with an import statement."""
    hidden = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and str(node.args[0].value).startswith("harness"):
                hidden.append(f"{name}: {node.args[0].value}")
    assert hidden == []
