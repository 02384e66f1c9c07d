"""One module per phase, each with `compute(ctx, cfg, inputs, **options)`, run inside the phase's
open MLflow run, and `load(ctx, cfg, run)`, the outputs of a finished run of it; `check`, `before`
and `keyed_on` (below: the defaults, which most phases import) run before its run opens. What each
reads and consumes is declared once, in the table of harness/table.py, which holds these modules.
"""
from __future__ import annotations

import importlib
import importlib.util
import types


def check(ctx, cfg, inputs) -> None:
    """Refuse, in one line and before any run opens, what would fail once the phase had started."""


def before(ctx, cfg, found) -> dict:
    """Tags and options for the run about to open, from the one lookup of its key (`found`, a
    store.Lookup, or None without cache): e.g. an interrupted run to continue."""
    return {}


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """What the phase's key covers besides its config fields, code, data splits and upstream keys:
    e.g. the content of weights or a model read from outside ("" parts are left out)."""
    return ()


class _OnFirstUse(types.ModuleType):
    """Stands for phase module `name` until it is first used, then imports it and hands over every
    attribute. Not in sys.modules: nothing that walks the loaded modules (inspect, torch's own import)
    loads it by looking."""

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)


def __getattr__(name: str):
    # `from harness.phases import baseline` (the table's import) binds the module itself once it is
    # loaded, and until then a stand-in that loads it on first use: the CLI builds its commands from the
    # table, and `harness --help` must not pay for torch and MLflow, which the phase modules import.
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _OnFirstUse(f"{__name__}.{name}")
