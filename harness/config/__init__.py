"""One frozen config for the whole study, presets from TOML, `--set section.key=value` overrides.

The defaults *are* the reference study (3 CIFAR-10 classes, 1000 images each, SimpleCNN, WGAN-GP,
1500 synthetic images, confidence >= 0.95). A preset file only lists what it changes.

    schema.py   the shared sections and their fields (`setting(...)`), kinds' own sections, hashes
    rules.py    ranges, choices and the rules that tie fields together; settings nothing reads
    presets.py  defaults <- preset TOML <- --set overrides, types checked, old names mapped
"""
from __future__ import annotations

from harness.config.presets import (RENAMED, apply, available_presets, ignored, load, preset_path, renamed, set_keys)
from harness.config.rules import (check, check_fields, min_quality_images)
from harness.config.schema import (AUGMENTATIONS, EXPERIMENTS_DIR, MIXING, PRECISIONS, SEED_MAX, SYNTHETIC_ONLY, UNHASHED,
                                   ClassifierConfig,
                                   Config, ControlConfig, DataConfig, GenerateConfig, GeneratorConfig, PretrainConfig,
                                   PseudolabelConfig, QualityConfig, SeedsConfig, config_hash, fields_where, flat,
                                   flat_sections, flat_values, kind_sections, optional_sections, sections, setting,
                                   sweepable_sections, to_dict, valid_keys, with_sections)

__all__ = [
    "AUGMENTATIONS", "ClassifierConfig", "Config", "ControlConfig", "DataConfig", "EXPERIMENTS_DIR",
    "GenerateConfig", "GeneratorConfig", "MIXING", "PRECISIONS", "PretrainConfig", "PseudolabelConfig", "QualityConfig",
    "RENAMED", "SEED_MAX", "SYNTHETIC_ONLY", "SeedsConfig", "UNHASHED", "apply", "available_presets", "check",
    "check_fields",
    "config_hash", "fields_where", "flat", "flat_sections", "flat_values", "ignored", "kind_sections", "load",
    "min_quality_images", "optional_sections", "preset_path", "renamed", "sections", "set_keys", "setting",
    "sweepable_sections", "to_dict", "valid_keys", "with_sections"]
