"""What a command holds while it runs phases: the store, the device, where the data is, and the
caches a sweep relies on. One object, passed explicitly: no module globals, nothing a caller
cannot see or drop.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.tracking.store import Store


@dataclass
class PhaseResult:
    """What every phase returns (the runner fills in all but the outputs). `source_run_id` holds the
    outputs (the reused run on a cache hit), `run_id` is the run opened for the phase now; `key` is
    the phase's cache key and `downstream_key` what stands for it in later phases' keys."""
    source_run_id: str
    metrics: dict = field(default_factory=dict)
    reused: bool = False
    key: str = ""
    downstream_key: str = ""
    run_id: str = ""
    seconds: float = 0.0  # its time in the walk that ran it (harness/runner/)

    def digest(self) -> str | None:
        """What stands for these outputs in later phases' keys, when their content is known (the
        kept images' digest); None: the phase's own key does."""
        return None


class Memo:
    """Per-process caches of a sweep: image streams per sampler, the baseline's probabilities of
    them, loaded generators. Bounded, so that a long sweep does not grow without end."""

    def __init__(self, kept: int = 8):
        self.kept = kept
        self.pools: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self.labelled: list[tuple[str, torch.Tensor, np.ndarray]] = []
        self.generators: OrderedDict[tuple, object] = OrderedDict()

    def remember(self, table: OrderedDict, key, value):
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.kept:
            table.popitem(last=False)
        return value


@dataclass
class Context:
    store: Store
    device: torch.device
    data_dir: str | None = None
    use_cache: bool = True
    resume: bool = False
    memo: Memo = field(default_factory=Memo)
    loaded_splits: dict = field(default_factory=dict, repr=False)  # (DataConfig, folder) -> Splits, loaded on first use
    _fingerprints: dict = field(default_factory=dict, repr=False)
    _modules: object = field(default=None, repr=False)  # provenance.ModuleCache, made on first use

    def splits(self, data_cfg, data_dir: str | None = None):
        """The splits of a data config, loaded once per context (a multi-seed study loads each seed's),
        from `data_dir` where a phase reads another tree (pretrain.data_dir), else --data-dir."""
        where = (data_cfg, data_dir or self.data_dir)
        if where not in self.loaded_splits:
            from harness import data
            self.loaded_splits[where] = data.load_splits(*where)
        return self.loaded_splits[where]

    def fingerprint(self, roots: tuple[str, ...]) -> str:
        if roots not in self._fingerprints:
            from harness.data import cache_dir
            from harness.tracking import provenance
            if self._modules is None:
                self._modules = provenance.ModuleCache(cache_dir() / "code")
            self._fingerprints[roots] = provenance.fingerprint(roots, cache=self._modules)
        return self._fingerprints[roots]
