"""The runner: how a phase of the table (harness/table.py) runs under one config, for every path
through the core: the pipeline, the single-phase commands, the sweep's trials and the grid's items.

For one phase it reads the table's row once, computes the key once, asks the store once (a run to
reuse, a worker computing the key now, an interrupted run to continue), opens the run (claiming
the key for the phases that take minutes), computes or loads, and returns a result whose ids say
what they are: `source_run_id` holds the outputs (the reused run on a cache hit), `run_id` is the
run opened now.

A phase's key = its name + the config fields it reads + the keys of the phases it consumes (or
what stands for them: a named run, the kept images' digest; of a phase it reads only the size of, that
size: the control's slot) + a digest of the data splits it reads
+ a fingerprint of the code it runs (its module and, through imports, everything it reaches; for
the generator kind, only the chosen kind's module). A FINISHED run with the same key in the
experiment is reused: its outputs are loaded, and the new run is tagged harness.reused_from.
"""
from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from harness.config import Config, config_hash, flat, flat_sections
from harness.errors import HarnessError
from harness.table import PHASES, Phase

if TYPE_CHECKING:
    from harness.context import Context, PhaseResult

CONTEXTS = {"train": "train", "val": "validation", "test": "test", "pool": "pool"}  # MLflow's dataset contexts


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


class Runner:
    """Runs phases for one Context: `Runner(ctx)`."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    # -- one phase ------------------------------------------------------------------------------

    def key(self, name: str, cfg: Config, inputs: dict[str, PhaseResult], row: Row | None = None) -> str:
        row = row or Row.of(name, cfg)
        parts = [name, config_hash(cfg, row.sections, row.ignores), self.ctx.fingerprint(row.phase.code(cfg))]
        if row.data:
            parts.append(row.splits(self.ctx, cfg).digest(*row.data))
        outside = row.phase.outside(self.ctx, cfg) if row.phase.outside else ""
        if outside:
            parts.append(outside)
        if row.phase.weights:  # weights from outside: their content (the pretrain phase's: an upstream key)
            from harness.classifiers import weights
            if weights.parse(cfg.classifier.init).outside:
                parts.append(weights.digest(self.ctx, cfg.classifier.init))
        # A phase that reads only how many images an upstream phase holds (the control) is keyed on that,
        # so that one run serves every upstream that holds as many.
        parts += [f"{u}={inputs[u].downstream_key}" for u in row.upstream if u not in row.phase.sized]
        if row.phase.sized:
            parts.append(f"slots={row.phase.module.slots(cfg, inputs)}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def run(self, name: str, cfg: Config, inputs: dict[str, PhaseResult], key_suffix: str = "",
            params: dict | None = None, brief: bool = False, options: dict | None = None) -> PhaseResult:
        """Phase `name` under its own MLflow run: reuse a finished run with the same key, else compute.

        `brief`: seconds of work done many times (a sweep's trial): no system metrics and no claim
        on the key, whatever the table says. `key_suffix` keeps apart runs that compute something
        else from the same inputs (a trial's validation-only model); `options` go to the phase's
        compute (its module says which it takes); `params` are logged besides the config's."""
        from harness.tracking import store as st
        ctx, store = self.ctx, self.ctx.store
        row = Row.of(name, cfg)
        row.phase.module.check(ctx, cfg, inputs)
        key = self.key(name, cfg, inputs, row) + key_suffix
        claim = row.phase.long and not brief and ctx.use_cache  # minutes of work: never done twice by two workers
        # One lookup of the key answers every question below: reuse, wait for a live worker, continue an
        # interrupted run. Waiting comes first: a worker that died meanwhile is continued, not restarted.
        found = store.lookup(key) if ctx.use_cache or ctx.resume else None
        if claim:
            found = store.wait_for_others(key, name, found)
        prepared = row.phase.module.before(ctx, cfg, found)
        tags = {"harness.config_hash": config_hash(cfg, row.sections, row.ignores), "harness.preset": cfg.preset,
                **self._data_tags(row, cfg), **prepared.get("tags", {})}
        run, hit = self._open(name, key, found, claim, tags, system_metrics=row.phase.long and not brief)
        run_params = {**flat_sections(cfg, row.sections, row.ignores),
                      **{f"upstream.{u}": inputs[u].source_run_id for u in row.upstream}, **(params or {})}
        with st.running(store, run, run_params, metrics=hit.data.metrics if hit else None,
                        tags={st.NOTE: st.reused_note(store, hit)} if hit else None) as pr:
            if hit:
                st.lead_to(store, hit)
            self._log_datasets(row, cfg, inputs)
            if hit:
                result = row.phase.module.load(ctx, cfg, hit)
            else:
                result = row.phase.module.compute(ctx, cfg, inputs, **(options or {}), **prepared.get("options", {}))
                result.source_run_id = pr.run_id
        result.reused, result.run_id = hit is not None, pr.run_id
        return _keyed(result, key)

    def _open(self, name: str, key: str, found, claim: bool, tags: dict, system_metrics: bool):
        """(the run opened for the phase, the FINISHED run it reuses or None).

        With `claim`, no two workers compute one key: a live worker's RUNNING run with the key is
        waited for and then reused, and two that announce at once both step back until one announces
        alone. Announce-then-check needs no lock: whichever announces second sees the first."""
        from harness.tracking import store as st
        store, use_cache = self.ctx.store, self.ctx.use_cache
        while True:
            if found is None and use_cache:
                found = store.lookup(key)
            hit = found.finished if found is not None and use_cache else None
            if hit is None and claim and store.live(found):
                found = store.wait_for_others(key, name, found)
                continue  # it finished (reuse it) or died (compute)
            marks = {"harness.cache_hit": key, "harness.reused_from": hit.info.run_id} if hit else {"harness.cache_key": key}
            run = st.start(store, name, {**tags, **marks}, system_metrics=system_metrics and hit is None)
            if hit is None and claim and store.computing(key, besides=run.info.run_id):
                # Announced at the same moment as another worker: whoever sees a rival after announcing
                # steps back (both may), so that at most one computes; the first to come back wins.
                st.step_back(store, run)
                time.sleep(random.uniform(0.2, 1.5))
                found = None
                continue
            return run, hit

    def inline(self, name: str, cfg: Config, inputs: dict[str, PhaseResult]) -> PhaseResult:
        """Phase `name` computed in memory under the active run (a sweep trial's), without a run,
        arrays or cache of its own: its `draft` returns the result and the metrics, which the caller
        logs. A trial's images are a prefix of one stream per checkpoint (generators/stream.py), so
        storing them per trial would only repeat the generator run, at 30 MB a trial."""
        import mlflow
        row = Row.of(name, cfg)
        if not row.phase.in_memory:
            raise ValueError(f"phase {name} has no in-memory form (Phase.in_memory)")
        row.phase.module.check(self.ctx, cfg, inputs)
        key = self.key(name, cfg, inputs, row)
        result = row.phase.module.draft(self.ctx, cfg, inputs)
        result.source_run_id = result.run_id = mlflow.active_run().info.run_id
        return _keyed(result, key)

    def load(self, name: str, cfg: Config, run_id: str, key: str | None = None) -> PhaseResult:
        """The outputs of a finished run of phase `name`: found by its `key`, or named by the user (it
        then stands for the phase in later keys as `run:<id>`)."""
        run = self.ctx.store.get_run(run_id)
        phase = run.data.tags.get("harness.phase")
        if phase != name:
            raise HarnessError(f"run {run_id} is a {phase or 'non-harness'} run, not a {name} run")
        if run.info.status != "FINISHED":
            raise HarnessError(f"run {run_id} is {run.info.status}, not FINISHED: its {name} outputs are incomplete")
        tags = run.data.tags
        source = self.ctx.store.get_run(tags["harness.reused_from"]) if "harness.reused_from" in tags else run
        _check_fits(run, cfg)
        result = PHASES[name].module.load(self.ctx, cfg, source)
        result.reused, result.run_id = True, run_id
        return _keyed(result, key or f"run:{source.info.run_id}")

    # -- several phases -------------------------------------------------------------------------

    def walk(self, cfg: Config, have: dict | None = None, stop: str | None = None, stop_before: str | None = None,
             under: dict[str, Config] | None = None, cached: bool = False, inline: tuple = (),
             options: dict[str, dict] | None = None, say: Callable[[str], None] | None = None) -> dict:
        """The phases of the table that run under `cfg`, in order, each once: those in `have` are
        given; the walk ends after `stop` or before `stop_before`.

        `under`: phases that run under a config of their own, their inputs too (one generator for
        every seed of a study, trained on its own draw), reused whenever found with `cached` even
        under --no-cache (an earlier seed of this study trained it). `inline`: phases computed in
        memory under the active run (`Runner.inline`); their metrics and upstream ids are written
        there in one call. `options`: per phase, keyword arguments of `run`. `say`: a line before
        and after each phase. Each result's `seconds` is the time it took here."""
        results = dict(have or {})
        under = under or {}
        pending: dict[str, dict] = {"params": {}, "metrics": {}}
        for name, phase in PHASES.items():
            if name == stop_before:
                break
            if name not in results and phase.runs(cfg):
                if say:
                    say(f"== {name}")
                t = time.perf_counter()
                if name in under:
                    runner = Runner(_cached(self.ctx)) if cached else self
                    results[name] = runner.need(name, under[name])
                elif name in inline:
                    result = results[name] = self.inline(name, cfg, {u: results[u] for u in phase.reads(cfg)[1]})
                    pending["metrics"].update(result.metrics)
                    pending["params"].update({f"upstream.{u}": results[u].source_run_id for u in phase.reads(cfg)[1]
                                              if results[u].source_run_id != result.run_id})
                else:
                    self._flush(pending)
                    results[name] = self.run(name, cfg, {u: results[u] for u in phase.reads(cfg)[1]},
                                             **(options or {}).get(name, {}))
                results[name].seconds = time.perf_counter() - t
                if say:
                    say(f"   {name}: {results[name].seconds:.1f} s{' (reused)' if results[name].reused else ''}")
            if name == stop:
                break
        self._flush(pending)
        return results

    def need(self, name: str, cfg: Config) -> PhaseResult:
        """Phase `name` under `cfg` with the upstream phases it reads, run (or reused) first."""
        done: dict[str, PhaseResult] = {}

        def get(u: str) -> PhaseResult:
            if u not in done:
                done[u] = self.run(u, cfg, {v: get(v) for v in PHASES[u].reads(cfg)[1]})
            return done[u]
        return get(name)

    def resolve(self, name: str, cfg: Config, pinned: dict[str, str]) -> dict[str, PhaseResult]:
        """The finished upstream results of `name` under this config (or the runs the user named), for
        a command that runs one phase: upstream phases are not trained here, except those without a
        command of their own (the evaluator), which are computed where they are needed."""
        out: dict[str, PhaseResult] = {}

        def get(u: str) -> PhaseResult:
            if u in out:
                return out[u]
            if u in pinned:
                out[u] = self.load(u, cfg, pinned[u])
                return out[u]
            row = Row.of(u, cfg)
            inputs = {v: get(v) for v in row.upstream}
            key = self.key(u, cfg, inputs, row)
            hit = self.ctx.store.find_finished(key)
            if hit is None and not row.phase.command:
                out[u] = self.run(u, cfg, inputs)
                return out[u]
            if hit is None:
                raise HarnessError(f"no finished {u} run for this config in the experiment; run `harness {u}` "
                                   f"with the same preset and --set values first, or pass --{u}-run RUN_ID")
            out[u] = self.load(u, cfg, hit.info.run_id, key)
            return out[u]

        upstream = PHASES[name].reads(cfg)[1]
        for u in upstream:  # the runs the user named first: a wrong one is the message, not a missing other
            if u in pinned:
                get(u)
        return {u: get(u) for u in upstream}

    # -- what a phase's run records besides its outputs -------------------------------------------

    def _flush(self, pending: dict[str, dict]) -> None:
        if pending["params"] or pending["metrics"]:
            from harness.tracking.store import log_batch
            log_batch(params=pending["params"], metrics=pending["metrics"], client=self.ctx.store.client)
            pending["params"], pending["metrics"] = {}, {}

    def _data_tags(self, row: Row, cfg: Config) -> dict[str, str]:
        """The content digest of each split the phase reads, so that comparisons can check them."""
        if not row.data:
            return {}
        splits = row.splits(self.ctx, cfg)
        return {"harness.data_source": splits.source, **{f"harness.data.{d}": splits.digest(d) for d in row.data}}

    def _log_datasets(self, row: Row, cfg: Config, inputs: dict) -> None:
        """MLflow's dataset records of what the phase reads (the runs table's Datasets column), in one
        call: each split with the digest of its full content (MLflow's own numpy digest samples the
        first values only), the kept images of the phases it records (the synthetic arm's), and what
        an outside generator read."""
        import warnings

        import mlflow

        from harness import generators
        from harness.tracking.store import log_inputs
        outside = generators.datasets(self.ctx, cfg) if row.phase.outside else []
        if not row.data and not outside:
            return
        splits = row.splits(self.ctx, cfg)
        label = splits.uri.rstrip("/").rsplit("/", 1)[-1] or "data"
        sets = [(f"{label}/{CONTEXTS[d]}", getattr(splits, f"{d}_x"), getattr(splits, f"{d}_y"),
                 splits.digest(d).split(":")[1], CONTEXTS[d]) for d in row.data]
        for u in row.phase.logs_inputs:
            kept = inputs[u]
            sets.append((f"{label}/synthetic", kept.images, kept.labels, kept.downstream_key.split(":")[-1],
                         "synthetic"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the source can be interpreted in multiple ways": a local folder either way
            datasets = [mlflow.data.from_numpy(x.numpy(), targets=y.numpy(), name=n, digest=dg, source=splits.uri or None)
                        for n, x, y, dg, _ in sets]
            datasets += [mlflow.data.from_numpy(r.images.numpy(), targets=None if r.labels is None else r.labels.numpy(),
                                                name=r.name, digest=r.digest, source=r.source) for r in outside]
        log_inputs(datasets, [c for *_, c in sets] + [r.context for r in outside])


def _cached(ctx: Context) -> Context:
    import dataclasses
    return dataclasses.replace(ctx, use_cache=True)


def _keyed(result: PhaseResult, key: str) -> PhaseResult:
    """`key` names the result; later phases' keys use the kept images' digest where there is one."""
    result.key = key
    result.downstream_key = result.digest() or key
    return result


def _check_fits(run, cfg: Config) -> None:
    """A named run made for other images (size, channels, classes) would fail deep inside torch."""
    mine = flat(cfg)
    for key in ("data.image_size", "data.channels", "data.classes"):
        theirs = run.data.params.get(key)
        if theirs is not None and theirs != mine[key]:
            raise HarnessError(f"run {run.info.run_id} was made with {key}={theirs}, this config has {key}={mine[key]}; "
                               f"pass --set {key}={theirs} or name a run made for these images")
