"""Imports run one way: library -> phases -> the table -> the runner -> pipeline, preflight, Optuna storages, grid, sweep -> CLI.
Read from the code's own import statements (lazy ones and TYPE_CHECKING ones included), so that a
reader can follow a value top to bottom with "go to definition"."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "harness"

# Each module's layer, by the first prefix that names it; everything else is the library (data, models,
# train, generators, classifier code, tracking, compare, quality, config, context).
LAYERS = (("harness.cli", 5), ("harness.__main__", 5),
          ("harness.pipeline", 4), ("harness.preflight", 4), ("harness.optuna_storage", 4), ("harness.grid", 4), ("harness.sweep", 4),
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


def test_the_main_path_is_followed_by_imports():
    """From the pipeline to the training loop through import statements alone, as "go to definition"
    follows it: pipeline -> runner -> the table, which holds the phase modules -> arms -> train."""
    g = graph()
    assert {f"harness.phases.{p}" for p in ("baseline", "control", "synthetic", "generate")} <= g["harness.table"]
    seen, todo = set(), ["harness.pipeline"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(g[m])
    assert {"harness.runner", "harness.table", "harness.phases.baseline", "harness.arms", "harness.train"} <= seen


def kind_comparisons(tree: ast.AST, kinds: set[str]) -> list[tuple[int, str]]:
    """(line, kind name) of each comparison with a kind's name as a literal."""
    return [(node.lineno, c.value) for node in ast.walk(tree) if isinstance(node, ast.Compare)
            for side in (node.left, *node.comparators) for c in ast.walk(side)
            if isinstance(c, ast.Constant) and c.value in kinds]


def test_no_code_branches_on_a_kind_name_outside_its_module():
    """A kind is its module and one registry line: no other code compares a value with a built-in kind's
    name (a default value, or the registry's own lines, are fine)."""
    from harness import registry
    kinds = set(registry.builtin_modules())
    own = {*registry.builtin_modules().values(), "harness.registry"}
    found = [f"{name}:{line}: {kind!r}" for name, path in modules().items() if name not in own
             for line, kind in kind_comparisons(ast.parse(path.read_text(encoding="utf-8")), kinds)]
    assert found == []
    # ...and it sees one: the table's rule before kinds named the [generator] fields they read.
    assert kind_comparisons(ast.parse('x = () if cfg.generator.kind == "mixup" else ("generator.mixup_alpha",)'),
                            kinds) == [(1, "mixup")]
