"""A sweep's search space, sampler and pruner, as data: a TOML spec (harness/experiments/sweep.toml is the
default), each parameter checked where it enters, and how a trial draws it."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import optuna

from harness import config
from harness.config import Config
from harness.errors import HarnessError

DEFAULT_SPEC = config.EXPERIMENTS_DIR / "sweep.toml"


@dataclass(frozen=True)
class Param:
    field: str  # config key, section.key
    kind: str  # int | float | categorical | checkpoint (a saved GAN epoch)
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


@dataclass(frozen=True)
class Spec:
    params: tuple[Param, ...]
    sampler: str = "tpe"  # tpe | gp | random
    n_startup_trials: int = 5  # random trials before TPE or GP models the space
    pruner: str = "median"  # median | threshold | none
    pruner_warmup_epochs: int = 2  # epochs a trial always gets before it can be pruned
    pruner_startup_trials: int = 3  # trials that finish before the median pruner acts
    pruner_lower: float = 0.0  # threshold pruner: prune when validation accuracy is below this


def load_spec(path: str | os.PathLike | None) -> Spec:
    path = Path(path) if path else DEFAULT_SPEC
    if not path.is_file():
        raise HarnessError(f"sweep spec {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"sweep spec {path} is not valid TOML: {e}") from None
    unknown = set(raw) - {"space", "sampler", "pruner"}
    if unknown:
        raise HarnessError(f"sweep spec {path}: unknown section(s) {', '.join(sorted(unknown))}; "
                           "expected [space.\"section.key\"], [sampler], [pruner]")
    valid = config.valid_keys()
    params = []
    for key, p in raw.get("space", {}).items():
        where = f"sweep spec {path}, space {key!r}"
        if key not in valid:
            raise HarnessError(f"{where}: unknown config field; valid fields: {', '.join(valid)}")
        if key.split(".")[0] not in config.sweepable_sections():  # what the study's shared phases read
            raise HarnessError(f"{where}: the baseline and the generator are trained once per study, so a trial "
                               f"cannot change {key}; sweep {', '.join(f'{x}.*' for x in config.sweepable_sections())} "
                               "fields, or run one sweep per value")
        if not isinstance(p, dict):
            raise HarnessError(f"{where}: expected a table (type = ..., low = ..., high = ...)")
        kind = p.get("type")
        extra = set(p) - {"type", "low", "high", "log", "choices"}
        if extra:
            raise HarnessError(f"{where}: unknown option(s) {', '.join(sorted(extra))}")
        if kind == "checkpoint":
            if key != "generate.checkpoint_epoch":
                raise HarnessError(f"{where}: type checkpoint only fits generate.checkpoint_epoch")
            params.append(Param(key, kind))
        elif kind in ("int", "float"):
            low, high = p.get("low"), p.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise HarnessError(f"{where}: type {kind} needs numbers low and high")
            if not low < high:
                raise HarnessError(f"{where}: low ({low}) must be below high ({high})")
            if p.get("log") and low <= 0:
                raise HarnessError(f"{where}: a log range needs low > 0, got {low}")
            try:  # the range's ends must be valid values of the field
                config.apply(Config(), {key: int(low) if kind == "int" else low})
                config.apply(Config(), {key: int(high) if kind == "int" else high})
            except HarnessError as e:
                raise HarnessError(f"{where}: {e}") from None
            params.append(Param(key, kind, low, high, bool(p.get("log", False))))
        elif kind == "categorical":
            choices = p.get("choices")
            if not isinstance(choices, list) or not choices:
                raise HarnessError(f"{where}: type categorical needs a non-empty list choices")
            for c in choices:
                try:
                    config.apply(Config(), {key: c})
                except HarnessError as e:
                    raise HarnessError(f"{where}: {e}") from None
            params.append(Param(key, kind, choices=tuple(choices)))
        else:
            raise HarnessError(f"{where}: type must be int, float, categorical or checkpoint, got {kind!r}")
    if not params:
        raise HarnessError(f"sweep spec {path} declares no [space.\"section.key\"] parameters")
    sampler, pruner = raw.get("sampler", {}), raw.get("pruner", {})
    for section, table, keys in (("sampler", sampler, {"type", "n_startup_trials"}),
                                 ("pruner", pruner, {"type", "warmup_epochs", "startup_trials", "lower"})):
        extra = set(table) - keys
        if extra:
            raise HarnessError(f"sweep spec {path}: unknown [{section}] option(s) {', '.join(sorted(extra))}; "
                               f"valid: {', '.join(sorted(keys))}")
    counts = [("sampler", sampler, "n_startup_trials"), ("pruner", pruner, "warmup_epochs"),
              ("pruner", pruner, "startup_trials")]
    for section, table, key in counts:
        value = table.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise HarnessError(f"sweep spec {path}: [{section}] {key} must be a whole number >= 0, got {value!r}")
    lower = pruner.get("lower", 0.0)
    if not isinstance(lower, (int, float)) or isinstance(lower, bool) or not lower >= 0.0 or lower == float("inf"):
        raise HarnessError(f"sweep spec {path}: [pruner] lower must be a validation accuracy >= 0 (above 1 prunes "
                           f"every trial), got {lower!r}")
    if sampler.get("type", "tpe") not in ("tpe", "gp", "random"):
        raise HarnessError(f"sweep spec {path}: sampler type must be tpe, gp or random, got {sampler.get('type')!r}")
    spec = Spec(tuple(params), sampler=sampler.get("type", "tpe"), n_startup_trials=sampler.get("n_startup_trials", 5),
                pruner=pruner.get("type", "median"), pruner_warmup_epochs=pruner.get("warmup_epochs", 2),
                pruner_startup_trials=pruner.get("startup_trials", 3), pruner_lower=pruner.get("lower", 0.0))
    if spec.pruner not in ("median", "threshold", "none"):
        raise HarnessError(f"sweep spec {path}: pruner type must be median, threshold or none, got {spec.pruner!r}")
    return spec


def suggest(trial: optuna.Trial, p: Param, checkpoints: list[int]):
    name = p.field
    if p.kind == "checkpoint":
        return trial.suggest_categorical(name, checkpoints)
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    if p.kind == "float":
        return trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
    return trial.suggest_categorical(name, list(p.choices))


