"""Where a config comes from: defaults <- a preset's TOML <- `--set section.key=value` overrides,
each value checked against its field's type, old names said once and mapped to the new ones; and
what a user set that nothing under the config reads."""
from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

from harness.config.rules import check
from harness.config.schema import (EXPERIMENTS_DIR, Config, _fields, _top, kind_sections, sections, valid_keys,
                                   with_sections)
from harness.errors import HarnessError


def _coerce(key: str, typ, value):
    """Check a TOML value (or parse a --set string) against the field's declared type."""
    if key == "data.n_per_class" and isinstance(value, str) and value.strip().lower() == "all":
        return 0
    want = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typ == tuple[tuple[str, str], ...]:
        return _table(key, value)
    if typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) or not value:
            raise HarnessError(f"{key} must be a non-empty list of names (a,b,c), got {value!r}")
        return tuple(value)
    if isinstance(value, str) and typ is not str:
        text = value.strip().lower()
        try:
            if typ is bool:
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text in ("true", "1", "yes")
            return typ(text)
        except ValueError:
            raise HarnessError(f"{key} must be {want[typ]}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not typ:
        raise HarnessError(f"{key} must be {want[typ]}, got {value!r}")
    return value


def _table(key: str, value) -> tuple[tuple[str, str], ...]:
    """A name -> text table: a TOML table, or `name=text;name=text` from --set (texts may hold commas)."""
    if isinstance(value, str):
        items = [part.partition("=") for part in value.split(";") if part.strip()]
        if any(not sep or not k.strip() for k, sep, _ in items):
            raise HarnessError(f"{key} takes name=text items separated by ';', got {value!r}")
        value = {k.strip(): v.strip() for k, _, v in items}
    if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        value = dict(value)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HarnessError(f"{key} must be a table of name = \"text\" (a [{key}] table in TOML), got {value!r}")
    return tuple(sorted(value.items()))


def set_keys(overrides: typing.Sequence[str]) -> list[str]:
    """The keys a user's --set overrides name."""
    return [item.partition("=")[0].strip() for chunk in overrides for item in _items(chunk)]


# Names of 0.1 that now say one thing each ("study" is the Optuna study, "gan" the GAN kind):
# accepted for one release, with a line naming the new one.
RENAMED = {"study.seeds": "seeds.count", "study.share_gan": "seeds.share_generator",
           "study.generators": "seeds.generators"}


def renamed(key: str) -> str:
    """The current name of a config key; an old one is said once per use (a FutureWarning, which the
    CLI prints as one `Deprecated:` line)."""
    if key in RENAMED:
        import warnings

        from harness import REMOVED_IN
        warnings.warn(f"{key} is now {RENAMED[key]}; the old name works until harness {REMOVED_IN}", FutureWarning,
                      stacklevel=3)
        return RENAMED[key]
    return key


def apply(cfg: Config, updates: dict[str, object]) -> Config:
    """Return a new Config with `section.key -> value` updates, each checked against its type."""
    sections: dict[str, dict] = {}
    top: dict[str, object] = {}
    hints = _top()
    updates = {renamed(key): value for key, value in updates.items()}
    for key, value in updates.items():
        section, _, sub = key.partition(".")
        typ = hints.get(section)
        if typ is None or (sub and not dataclasses.is_dataclass(typ)) or (not sub and dataclasses.is_dataclass(typ)):
            raise HarnessError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
        if sub:
            sub_hints = _fields(typ)
            if sub not in sub_hints:
                raise HarnessError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
            default = next(f.default for f in dataclasses.fields(typ) if f.name == sub)
            if default == () and value in ("", [], ()):  # a list whose empty default means something (pretrain.classes)
                sections.setdefault(section, {})[sub] = ()
                continue
            sections.setdefault(section, {})[sub] = _coerce(key, sub_hints[sub], value)
        else:
            top[section] = _coerce(key, typ, value)
    replaced = {name: dataclasses.replace(getattr(cfg, name), **subs) for name, subs in sections.items()}
    new = with_sections(dataclasses.replace(cfg, **top), replaced)
    check(new)
    return new


def available_presets() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml") if not p.stem.startswith("sweep"))


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise HarnessError(f"preset {path} is a folder; give a preset name or a .toml file")
        if not path.is_file():
            raise HarnessError(f"preset file {path} does not exist")
        return path
    for base in (Path.cwd() / "experiments", EXPERIMENTS_DIR):
        candidate = base / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    raise HarnessError(f"unknown preset {name_or_path!r}; available: {', '.join(available_presets())} "
                       "(or give a path to a .toml file)")


def _items(chunk: str) -> list[str]:
    return [part for part in re.split(r"\s+(?=[A-Za-z_]\w*(?:\.\w+)?=)", chunk.strip()) if part]


def load(preset: str = "reference", overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults <- preset file <- `--set section.key=value` overrides, validated at each step."""
    path = preset_path(preset)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"preset {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise HarnessError(f"preset {path} is not a text file (TOML is UTF-8 text)") from None
    updates: dict[str, object] = {}
    unknown = [key for key, value in data.items() if isinstance(value, dict) and key not in sections()
               and not any(old.startswith(f"{key}.") for old in RENAMED)]
    if unknown:  # an empty [baseline] table would otherwise say nothing and change nothing
        raise HarnessError(f"preset {path}: unknown section [{unknown[0]}]; sections: {', '.join(sections())}")
    for key, value in data.items():
        if isinstance(value, dict):
            updates.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            updates[key] = value
    updates.setdefault("preset", path.stem)
    cfg = apply(Config(), updates)
    parsed = {}
    # One --set may carry several space-separated items (MLproject passes them as one string); a
    # value may hold spaces (a prompt), so a chunk splits only before a space-led `section.key=`.
    for item in (part for chunk in overrides for part in _items(chunk)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set takes section.key=value, got {item!r}")
        parsed[key.strip()] = value
    return apply(cfg, parsed) if parsed else cfg


def ignored(cfg: Config, overrides: typing.Sequence[str] = ()) -> list[str]:
    """What the user set with --set that nothing under this config reads, in words (commands print each as
    a `note:` line): a kind's own section while another kind runs (a phase's own: its module's
    `unused_settings`, e.g. phases/pretrain.py). A preset's own sections are not said: a preset sizes every phase,
    whether a command runs it or not."""
    keys = set_keys(overrides)
    out = []
    for name in kind_sections():
        mine = [k for k in keys if k.startswith(f"{name}.")]
        if mine and name not in (cfg.classifier.kind, cfg.generator.kind):
            out.append(f"{', '.join(mine)} ignored: [{name}] belongs to the {name} kind, and this config has "
                       f"classifier.kind={cfg.classifier.kind}, generator.kind={cfg.generator.kind}")
    return out
