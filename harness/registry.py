"""Kinds by name: the built-in ones a package lists, and plugins installed under an entry-point group.
Generator kinds (harness/generators/) and classifier kinds (harness/classifiers/) are both found here."""
from __future__ import annotations

import importlib
import importlib.metadata

from harness.errors import HarnessError

GENERATORS, CLASSIFIERS = "harness.generators", "harness.classifiers"  # the entry-point groups of plugin kinds
GROUPS = (GENERATORS, CLASSIFIERS)

# The built-in kinds: a new one is its module and one line here. Listed here, not in their packages, so
# that the config gathers their sections (a kind module's CONFIG) without importing the families.
BUILTIN_GENERATORS = {
    "gan": "harness.generators.gan",
    "diffusion": "harness.generators.diffusion",
    "oracle": "harness.generators.oracle",
    "mixup": "harness.generators.mixup",
    "noise": "harness.generators.noise",
    "replay": "harness.generators.replay",
    "folder": "harness.generators.folder",
    "text2image": "harness.generators.text2image",
}
BUILTIN_CLASSIFIERS = {
    "simplecnn": "harness.classifiers.simplecnn",
    "resnet18": "harness.classifiers.resnet",
    "airbench": "harness.classifiers.airbench",
}
CLASSIFIER_PATTERNS = {"torchvision:": "harness.classifiers.hub", "timm:": "harness.classifiers.hub"}


def builtin_modules() -> dict[str, str]:
    """Every built-in kind's module by kind name (generators and classifiers share one namespace of
    config sections: a kind's own section is named after it)."""
    return {**BUILTIN_GENERATORS, **BUILTIN_CLASSIFIERS}


class Registry:
    """`get(name)` -> the kind's module, checked to implement the family's protocol (`required`)."""

    def __init__(self, family: str, group: str, builtin: dict[str, str], required: tuple[str, ...], protocol: str,
                 patterns: dict[str, str] | None = None):
        self.family, self.group, self.builtin, self.required, self.protocol = family, group, builtin, required, protocol
        self.patterns = patterns or {}  # "torchvision:" -> the module of every kind named so

    def plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        """Installed kinds by name; a built-in name is not shadowed."""
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group) if ep.name not in self.builtin}

    def names(self) -> list[str]:
        return list(self.builtin) + [f"{p}NAME" for p in self.patterns] + sorted(self.plugins())

    def origin(self, name: str) -> str:
        if name in self.builtin or any(name.startswith(p) for p in self.patterns):
            return "built-in"
        return f"plugin ({self.plugins()[name].value})"

    def get(self, kind: str):
        if kind in self.builtin:
            return importlib.import_module(self.builtin[kind])
        prefix = next((p for p in self.patterns if kind.startswith(p) and len(kind) > len(p)), None)
        if prefix is not None:
            return importlib.import_module(self.patterns[prefix])
        ep = self.plugins().get(kind)
        if ep is None:
            raise HarnessError(f"{self.family}.kind must be one of {', '.join(self.names())} (`harness kinds` lists "
                               f"them), got {kind!r}")
        where = f"plugin {self.family} kind {kind!r} ({ep.value}, from {ep.dist.name if ep.dist else 'an unknown distribution'})"
        try:
            module = ep.load()
        except Exception as e:  # a plugin's own bug: name it, without our traceback
            raise HarnessError(f"{where} failed to import: {type(e).__name__}: {e}") from None
        missing = [a for a in self.required if not hasattr(module, a)]
        if missing:
            raise HarnessError(f"{where} does not implement the {self.family} protocol: it lacks {', '.join(missing)} "
                               f"(see {self.protocol})")
        return module
