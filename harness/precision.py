"""Which arithmetic a training loop runs in: fp32, or bf16 autocast where the hardware has it.

`auto` resolves per machine: bf16 on CUDA devices of compute capability 8.0 and later (Ampere on),
and on CPUs whose torch build reports AMX-BF16 or AVX512-BF16 (`torch.cpu.get_capabilities`); fp32
elsewhere, where bf16 is emulated in float32 registers plus conversions and runs slower than fp32.
Commands resolve it once, when they pick the device (`resolve_config`), so the config every phase
sees, logs and keys on holds `fp32` or `bf16`, never `auto`: results made in bf16 are never reused
as fp32 ones, or the other way round. A grid keeps `auto` in its plan and each worker resolves it
for its own machine.

Under bf16 only the forward passes of training run under autocast; weights, optimizer state, the
EMA, loss sums and everything written to disk stay float32, and evaluation (validation, test,
pseudo-label confidences) runs in float32.
"""
from __future__ import annotations

import dataclasses

import torch



def cpu_capabilities() -> dict:
    """The CPU's instruction sets as torch's build detects them (empty where torch cannot say)."""
    get = getattr(torch.cpu, "get_capabilities", None)  # public from torch 2.8
    if get is not None:
        return dict(get())
    flags = {}
    for name, probe in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        fn = getattr(torch.cpu, probe, None)
        flags[name] = bool(fn()) if fn is not None else False
    return flags


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether `device` runs bf16 natively, what it has, in words)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return major >= 8, f"{name}, CUDA capability {major}.{minor}" + ("" if major >= 8 else " (bf16 needs 8.0)")
    if device.type == "cpu":
        caps = cpu_capabilities()
        units = [label for key, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if caps.get(key)]
        name = caps.get("cpu_name") or "this CPU"
        if units:
            return True, f"{name} with {' and '.join(units)}"
        return False, f"{name} without bf16 units (no AMX-BF16 or AVX512-BF16)"
    return False, f"{device.type} (not checked for bf16)"


def resolve(setting: str, device: torch.device) -> str:
    """fp32 or bf16: `auto` by the hardware, the others as given."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device)[0] else "fp32"


def resolve_config(cfg, device: torch.device):
    """The config with every `auto` precision replaced by what this machine runs."""
    from harness.config import fields_where, optional_sections, with_sections
    sections, optional = {}, optional_sections()
    for section, name in (key.split(".") for key in fields_where("precision")):
        if section in optional and section not in (cfg.generator.kind, cfg.classifier.kind):
            continue  # a section only its kind reads stays at its defaults, out of every other config's hash
        sub = sections.get(section, getattr(cfg, section))
        if getattr(sub, name) == "auto":
            sections[section] = dataclasses.replace(sub, **{name: resolve("auto", device)})
    return with_sections(cfg, sections) if sections else cfg


def autocast(precision: str, device: torch.device):
    """The training forward pass's context: bf16 autocast, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
