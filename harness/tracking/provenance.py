"""What produced a result: the fingerprint of the code a phase runs, the package hash, git commit
and library versions.

A phase's cache key holds the fingerprint of the modules it runs, found by following its imports
(static, `ast`), so that nobody maintains a list by hand. The fingerprint hashes each module's
syntax tree without docstrings: a comment, a blank line or a reworded docstring leaves it
unchanged; a changed statement changes it. An edit in a module the phase does not reach leaves
its key alone, so a 20-minute GAN survives an edit of the comparator.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGE = "harness"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Registries import every entry they list; a phase runs only the one its config chooses, which the
# phase names as a root itself. So a registry contributes its own code, not its entries'.
REGISTRIES = frozenset({"harness.generators", "harness.classifiers"})
# Code that only opens runs, logs, heartbeats, claims, checks ranges, reports progress or draws
# figures: what a phase computes does not depend on it, so no key covers it and an edit there
# retrains nothing. It is kept out by where it lives (these modules and packages, and the package's
# own __init__ with its version), never by how it is imported. Config values reach every key through
# the config hash, not through harness/config's code.
PLUMBING = ("harness.tracking", "harness.config", "harness.errors", "harness.progress", "harness.context",
            "harness.figures", "harness.analysis.render")


def plumbing(name: str) -> bool:
    return name == PACKAGE or any(name == p or name.startswith(p + ".") for p in PLUMBING)


def module_file(name: str, root: Path = PACKAGE_DIR, package: str = PACKAGE) -> Path | None:
    """The source file of module `name` (`harness.x.y`) under `root`, the package's folder; a module
    of another package (a plugin's) wherever Python finds it."""
    parts = name.split(".")
    if parts[0] != package:
        return _found_file(name)
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _found_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):  # an attribute imported from a module, not a module
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _imports(name: str, tree: ast.AST, is_package: bool, package: str) -> set[str]:
    """Package modules that `name`'s code imports, anywhere (lazy imports in functions included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from harness import x`: x may be a module
    found = set()
    for mod in out:
        if mod.split(".")[0] not in package.split(","):
            continue
        parts = mod.split(".")
        # Importing harness.a.b runs harness/__init__ and harness/a/__init__ too.
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


class ModuleCache:
    """(digest of the normalized source, package imports) of each module file: in memory for one
    command (a command asks for the keys of every phase, and they share most modules) and, given a
    folder, on disk across commands, keyed by the file's bytes and the Python version (whose `ast`
    the digest depends on). Parsing the package's syntax trees took ~0.7 s of every command, for
    code that had not changed since the last one."""

    def __init__(self, folder: Path | None = None):
        self.file = folder / f"modules-py{sys.version_info[0]}{sys.version_info[1]}.json" if folder else None
        self.memory: dict[Path, tuple[str, set[str]]] = {}
        self._disk: dict | None = None
        self._new = False

    def parsed(self, name: str, path: Path, package: str) -> tuple[str, set[str]]:
        if path not in self.memory:
            source = path.read_bytes()
            key = hashlib.sha256(f"{sys.version}\0{package}\0{name}\0".encode() + source).hexdigest()[:32]
            disk = self._load()
            if key not in disk:
                tree = ast.parse(source, str(path))
                imports = _imports(name, tree, path.name == "__init__.py", package)
                disk[key] = [hashlib.sha256(_normalized_tree(tree).encode()).hexdigest(), sorted(imports)]
                self._new = True
            digest, imports = disk[key]
            self.memory[path] = (digest, set(imports))
        return self.memory[path]

    def _load(self) -> dict:
        if self._disk is None:
            self._disk = {}
            if self.file is not None:
                try:
                    self._disk = json.loads(self.file.read_text())
                except (OSError, ValueError):  # none yet, or torn: parse again
                    pass
        return self._disk

    def save(self) -> None:
        """Write what was parsed anew; an unwritable folder only costs the next command the parse."""
        if not (self._new and self.file is not None):
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._disk))
            os.replace(tmp, self.file)  # atomic: a concurrent command reads the old or the new index
            self._new = False
        except OSError:
            pass


def closure(roots, root: Path = PACKAGE_DIR, package: str = PACKAGE,
            registries=REGISTRIES, cache: ModuleCache | None = None) -> dict[str, Path]:
    """Every package module the `roots` reach through their imports: name -> file. A root outside the
    package (a plugin kind) brings its own top-level package in: its code is followed like ours."""
    cache = ModuleCache() if cache is None else cache
    primary = package
    package = ",".join([package, *sorted({r.split(".")[0] for r in roots} - {package})])
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if plumbing(name):
            continue
        path = module_file(name, root, primary)
        if path is None:
            continue  # an attribute imported from a module, not a module
        seen[name] = path
        if name in registries:
            continue
        todo += sorted(cache.parsed(name, path, package)[1] - set(seen))
    return seen


def _normalized_tree(tree: ast.AST) -> str:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def fingerprint(roots, root: Path = PACKAGE_DIR, package: str = PACKAGE, registries=REGISTRIES,
                cache: ModuleCache | None = None) -> str:
    """A 12-hex-digit hash of the code `roots` run (see the module docstring)."""
    cache = ModuleCache() if cache is None else cache
    h = hashlib.sha256()
    packages = ",".join([package, *sorted({r.split(".")[0] for r in roots} - {package})])
    for name, path in sorted(closure(roots, root, package, registries, cache).items()):
        h.update(name.encode() + b"\0" + cache.parsed(name, path, packages)[0].encode() + b"\0")
    cache.save()
    return h.hexdigest()[:12]


def code_version(root: Path = PACKAGE_DIR) -> str:
    """Hash of the whole package source, edits included: a tag that says which code ran, not a key."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist: str, module: str) -> str:
    """A library's version without importing it: torchvision and sklearn take seconds to import
    (torchvision pulls in torch._dynamo), which every command paid only to write this tag."""
    import importlib.metadata
    if module == "torch":  # every command imports it anyway; its version names the build (+cu130, +cpu)
        import torch
        return torch.__version__
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tags() -> dict[str, str]:
    """Package hash, git commit and library versions (read once per Store: a sweep opens hundreds of runs)."""
    from harness import __version__
    out = {"harness.code_version": code_version(), "harness.version": __version__,
           "harness.versions.python": platform.python_version()}
    for dist, module in (("torch", "torch"), ("torchvision", "torchvision"), ("mlflow", "mlflow"),
                         ("numpy", "numpy"), ("scikit-learn", "sklearn")):
        out[f"harness.versions.{module}"] = _version(dist, module)
    commit = git_commit()
    if commit:
        out["mlflow.source.git.commit"] = commit
    return out
