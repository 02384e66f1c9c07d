"""A phase's key: what makes two runs of it the same computation, so that one is reused for the other.

key = its name + the config fields it reads + a fingerprint of the code it runs (its module and,
through imports, everything it reaches; for the generator kind, only the chosen kind's module) + a
digest of the data splits it reads + what its module's `keyed_on` adds (weights or a model read from
outside, the control's slot) + the keys of the phases it consumes (or what stands for them: a named
run, the kept images' digest), less the phases it reads only the size of (the table's `sized`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import phases
from harness.config import Config, config_hash
from harness.table import PHASES, Phase

if TYPE_CHECKING:
    from harness.context import Context, PhaseResult


@dataclass(frozen=True)
class Row:
    """A table row read under one config, once: what the phase's key, params and records all use."""
    phase: Phase
    sections: tuple
    upstream: tuple
    data: tuple
    ignores: tuple

    @classmethod
    def of(cls, name: str, cfg: Config) -> Row:
        phase = PHASES[name]
        return cls(phase, *phase.reads(cfg), phase.ignored(cfg))

    def data_config(self, cfg: Config):
        return self.phase.data_of(cfg) if self.phase.data_of else cfg.data

    def splits(self, ctx: Context, cfg: Config):
        """The splits the phase reads: its draw, from its own tree where it has one."""
        return ctx.splits(self.data_config(cfg), self.phase.data_dir_of(cfg) if self.phase.data_dir_of else None)

    def config_hash(self, cfg: Config) -> str:
        return config_hash(cfg, self.sections, self.ignores)


def key(ctx: Context, row: Row, cfg: Config, inputs: dict[str, PhaseResult]) -> str:
    parts = [row.phase.name, row.config_hash(cfg), ctx.fingerprint(row.phase.code(cfg))]
    if row.data:
        parts.append(row.splits(ctx, cfg).digest(*row.data))
    parts += [p for p in getattr(row.phase.module, "keyed_on", phases.keyed_on)(ctx, cfg, inputs) if p]
    parts += [f"{u}={inputs[u].downstream_key}" for u in row.upstream if u not in row.phase.sized]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def keyed(result: PhaseResult, key: str) -> PhaseResult:
    """`key` names the result; later phases' keys use the kept images' digest where there is one."""
    result.key = key
    result.downstream_key = result.digest() or key
    return result
