"""What a config must satisfy beyond its fields' types: each field's declared range and choices, and
the rules that tie fields together."""
from __future__ import annotations

import dataclasses
import math

from harness.config.schema import Config, sections
from harness.errors import HarnessError


def _bounds(meta: dict) -> str:
    """A field's range in words: "> 0", ">= 0", "in [0, 1)"."""
    num = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # noqa: E731 (4294967295, not 4.29497e+09)
    lo = ("(", meta["gt"]) if "gt" in meta else ("[", meta["ge"]) if "ge" in meta else None
    hi = (")", meta["lt"]) if "lt" in meta else ("]", meta["le"]) if "le" in meta else None
    if lo and hi:
        return f"in {lo[0]}{num(lo[1])}, {num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {num(lo[1])}"
    return f"{'<' if hi[0] == ')' else '<='} {num(hi[1])}"


def _in_range(value, meta: dict) -> bool:
    return not (("gt" in meta and not value > meta["gt"]) or ("ge" in meta and not value >= meta["ge"])
                or ("lt" in meta and not value < meta["lt"]) or ("le" in meta and not value <= meta["le"]))


def check_fields(cfg: Config) -> None:
    """Every field against what its declaration states: finite numbers, its range, its choices; then
    each section's own rules (a `check()` method on its dataclass: gan.diffaugment's policies, say)."""
    for name, cls in sections().items():
        section = getattr(cfg, name)
        _check_section(name, cls, section)
        if hasattr(section, "check"):
            section.check()


def _check_section(name: str, cls, section) -> None:
    for f in dataclasses.fields(cls):
        key, value, meta = f"{name}.{f.name}", getattr(section, f.name), f.metadata
        if isinstance(value, float) and not math.isfinite(value):  # inf and nan parse as floats; no setting means either
            raise HarnessError(f"{key} must be a finite number, got {value}")
        why = f" ({meta['why']})" if meta.get("why") else ""
        if "choices" in meta and value not in meta["choices"]:
            raise HarnessError(f"{key} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}{why}")
        if not _in_range(value, meta):
            raise HarnessError(f"{key} must be {_bounds(meta)}{why}, got {value}")


def check(cfg: Config) -> None:
    """The declared ranges, then the rules that tie fields of the shared sections together (a kind's
    own rules are its module's `check`, run by the command's preflight)."""
    check_fields(cfg)
    if cfg.classifier.real_only_epochs > cfg.classifier.epochs:
        raise HarnessError(f"classifier.real_only_epochs ({cfg.classifier.real_only_epochs}) exceeds classifier.epochs "
                           f"({cfg.classifier.epochs})")
    least = min_quality_images(cfg.quality.k)
    if cfg.quality.n_samples < least:
        raise HarnessError(f"quality.n_samples ({cfg.quality.n_samples}) is too few images to measure: precision and "
                           f"recall need more than quality.k ({cfg.quality.k}) neighbours and FD/KID a spread; "
                           f"use at least {least}")
    if cfg.generate.checkpoint_epoch == -1 and not cfg.quality.enabled:
        raise HarnessError("generate.checkpoint_epoch=-1 (the best checkpoint by quality) needs quality.enabled=true")
    overlap = sorted(set(cfg.pretrain.classes) & set(cfg.data.classes))
    if overlap:
        raise HarnessError(f"pretrain.classes overlaps data.classes ({', '.join(overlap)}): pretraining on the study's "
                           "own classes leaks its task into both arms; pretrain on other classes")
    if cfg.data.classes != ("all",) and (len(set(cfg.data.classes)) != len(cfg.data.classes) or len(cfg.data.classes) < 2):
        raise HarnessError(f"data.classes must name at least 2 distinct classes (or be all), got {list(cfg.data.classes)}")
    if cfg.data.source and not cfg.data.source.startswith("torchvision:"):
        raise HarnessError(f"data.source must be empty (use --data-dir) or torchvision:NAME, got {cfg.data.source!r}")


def min_quality_images(k: int) -> int:
    """The fewest images FD, KID and k-NN precision/recall are measured on: k + 1 for the k-th
    neighbour, and 10 so that a mean and covariance are more than a couple of points."""
    return max(k + 1, 10)
