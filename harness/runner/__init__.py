"""The runner: how a phase of the table (harness/table.py) runs under one config, for every path
through the core: the pipeline, the single-phase commands, the sweep's trials and the grid's items.

For one phase it reads the table's row once, computes the key once (keys.py), asks the store once (a
run to reuse, a worker computing the key now, an interrupted run to continue), opens the run
(claiming the key for the phases that take minutes: claim.py), records what it reads (records.py),
computes or loads, and returns a result whose ids say what they are: `source_run_id` holds the
outputs (the reused run on a cache hit), `run_id` is the run opened now. A FINISHED run with the same
key in the experiment is reused: its outputs are loaded, and the new run is tagged harness.reused_from.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from harness.config import Config, flat, flat_sections
from harness.errors import HarnessError
from harness.runner import claim, keys, records
from harness.runner.keys import Row
from harness.table import PHASES

if TYPE_CHECKING:
    from harness.context import Context, PhaseResult


class Runner:
    """Runs phases for one Context: `Runner(ctx)`."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    # -- one phase ------------------------------------------------------------------------------

    def key(self, name: str, cfg: Config, inputs: dict[str, PhaseResult], row: Row | None = None) -> str:
        return keys.key(self.ctx, row or Row.of(name, cfg), cfg, inputs)

    def run(self, name: str, cfg: Config, inputs: dict[str, PhaseResult], key_suffix: str = "",
            params: dict | None = None, brief: bool = False, compute_options: dict | None = None) -> PhaseResult:
        """Phase `name` under its own MLflow run: reuse a finished run with the same key, else compute.

        `brief`: seconds of work done many times (a sweep's trial): no system metrics and no claim
        on the key, whatever the table says. `key_suffix` keeps apart runs that compute something
        else from the same inputs (a trial's validation-only model); `compute_options` go to the phase's
        compute (its module says which it takes); `params` are logged besides the config's."""
        from harness.tracking import store as st
        ctx, store = self.ctx, self.ctx.store
        row = Row.of(name, cfg)
        row.phase.module.check(ctx, cfg, inputs)
        key = self.key(name, cfg, inputs, row) + key_suffix
        claims = row.phase.long and not brief and ctx.use_cache  # minutes of work: never done twice by two workers
        # One lookup of the key answers every question below: reuse, wait for a live worker, continue an
        # interrupted run. Waiting comes first: a worker that died meanwhile is continued, not restarted.
        found = store.lookup(key) if ctx.use_cache or ctx.resume else None
        if claims:
            found = store.wait_for_others(key, name, found)
        prepared = row.phase.module.before(ctx, cfg, found)
        tags = {"harness.config_hash": row.config_hash(cfg), "harness.preset": cfg.preset,
                **records.data_tags(ctx, row, cfg), **prepared.get("tags", {})}
        run, hit = claim.open_run(ctx, name, key, found, claims, tags, system_metrics=row.phase.long and not brief)
        run_params = {**flat_sections(cfg, row.sections, row.ignores),
                      **{f"upstream.{u}": inputs[u].source_run_id for u in row.upstream}, **(params or {})}
        with st.running(store, run, run_params, metrics=hit.data.metrics if hit else None,
                        tags={st.NOTE: st.reused_note(store, hit)} if hit else None) as pr:
            if hit:
                st.lead_to(store, hit)
            records.log_datasets(ctx, row, cfg, inputs)
            if hit:
                result = row.phase.module.load(ctx, cfg, hit)
            else:
                result = row.phase.module.compute(ctx, cfg, inputs, **(compute_options or {}), **prepared.get("options", {}))
                result.source_run_id = pr.run_id
        result.reused, result.run_id = hit is not None, pr.run_id
        return keys.keyed(result, key)

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
        return keys.keyed(result, key)

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
        return keys.keyed(result, key or f"run:{source.info.run_id}")

    # -- several phases -------------------------------------------------------------------------

    def walk(self, cfg: Config, have: dict | None = None, stop: str | None = None, stop_before: str | None = None,
             under: dict[str, Config] | None = None, cached: bool = False, inline: tuple = (),
             run_options: dict[str, dict] | None = None, say: Callable[[str], None] | None = None) -> dict:
        """The phases of the table that run under `cfg`, in order, each once: those in `have` are
        given; the walk ends after `stop` or before `stop_before`.

        `under`: phases that run under a config of their own, their inputs too (one generator for
        every seed of a study, trained on its own draw), reused whenever found with `cached` even
        under --no-cache (an earlier seed of this study trained it). `inline`: phases computed in
        memory under the active run (`Runner.inline`); their metrics and upstream ids are written
        there in one call. `run_options`: per phase, keyword arguments of `run`. `say`: a line before
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
                    records.flush(self.ctx, pending)
                    results[name] = self.run(name, cfg, {u: results[u] for u in phase.reads(cfg)[1]},
                                             **(run_options or {}).get(name, {}))
                results[name].seconds = time.perf_counter() - t
                if say:
                    say(f"   {name}: {results[name].seconds:.1f} s{' (reused)' if results[name].reused else ''}")
            if name == stop:
                break
        records.flush(self.ctx, pending)
        return results

    def need(self, name: str, cfg: Config) -> PhaseResult:
        """Phase `name` under `cfg` with the upstream phases it reads, run (or reused) first."""
        done: dict[str, PhaseResult] = {}

        def get(u: str) -> PhaseResult:
            if u not in done:
                done[u] = self.run(u, cfg, {v: get(v) for v in PHASES[u].reads(cfg)[1]})
            return done[u]
        return get(name)

    def finished_inputs(self, name: str, cfg: Config, pinned: dict[str, str]) -> dict[str, PhaseResult]:
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


def _cached(ctx: Context) -> Context:
    import dataclasses
    return dataclasses.replace(ctx, use_cache=True)


def _check_fits(run, cfg: Config) -> None:
    """A named run made for other images (size, channels, classes) would fail deep inside torch."""
    mine = flat(cfg)
    for key in ("data.image_size", "data.channels", "data.classes"):
        theirs = run.data.params.get(key)
        if theirs is not None and theirs != mine[key]:
            raise HarnessError(f"run {run.info.run_id} was made with {key}={theirs}, this config has {key}={mine[key]}; "
                               f"pass --set {key}={theirs} or name a run made for these images")
