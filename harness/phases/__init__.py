"""One module per phase, each with `compute(ctx, cfg, inputs, **options)`, run inside the phase's
open MLflow run, and `load(ctx, cfg, run)`, the outputs of a finished run of it; `check` and
`before` (below: the defaults, which most phases import) run before its run opens. What each reads
and consumes is declared once, in the table of harness/table.py."""
from __future__ import annotations


def check(ctx, cfg, inputs) -> None:
    """Refuse, in one line and before any run opens, what would fail once the phase had started."""


def before(ctx, cfg, found) -> dict:
    """Tags and options for the run about to open, from the one lookup of its key (`found`, a
    store.Lookup, or None without cache): e.g. an interrupted run to continue."""
    return {}
