"""Grids: the cross product of config axes, each cell a paired multi-seed study, as (cell, seed) work
items in an Optuna storage that any number of workers, on any machines, pull until none is left.

    harness grid --preset tiny --axis data.n_per_class=10,20 --seeds 4 --study g   # plans it, then works
    harness worker --study g --storage URL                                         # more hands, anywhere
    harness grid --report --study g --storage URL                                  # the report, any time

- A work item is an enqueued Optuna trial (user attrs `cell`, `seed`): claiming one is Optuna's
  atomic WAITING -> RUNNING switch, a worker's trial heartbeat proves it alive, and a killed worker's
  item is failed once its heartbeat is stale and retried (RetryFailedTrialCallback) by whoever is there.
- Each item is one pipeline (`harness run` for that cell and seed) nested under the grid's one MLflow
  run (opened by whoever created the study) and tagged `harness.cell`; the phase cache reuses whatever
  is already finished, so a grid grows (more seeds, another value: the same command again) without
  recomputing. The trial's value is the pair's accuracy delta.
- The report (grid.md, grid.json, and grid.png: the delta against the first numeric axis, a line per
  value of the others, CI bands) is logged on the grid run by the worker that finishes the last item.
"""
from __future__ import annotations

import itertools
import json
import math
import threading
import time
from dataclasses import dataclass

import click
import optuna

from harness import config, generators, pipeline, precision, studies
from harness.config import Config
from harness.context import Context
from harness.errors import HarnessError, mask
from harness.tracking import codecs, liveness, store
from harness.tracking.store import NOTE

PLAN = "harness.grid"  # study user attr: what the grid is (base config, axes, seeds)
WAITING, RUNNING = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


@dataclass(frozen=True)
class Cell:
    label: str  # "data.n_per_class=10 generator.kind=oracle"; "all" without axes
    cfg: Config


def parse_axes(axes: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    out = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not items:
            raise HarnessError(f"--axis takes section.key=v1,v2,..., got {axis!r}")
        if len(set(items)) != len(items):
            raise HarnessError(f"--axis {axis!r} repeats a value")
        if key.strip() in ("data.seed", "classifier.seed", "gan.seed", "generate.seed"):
            raise HarnessError(f"--axis {key.strip()}: seeds are the grid's --seeds, not an axis")
        out.append((key.strip(), items))
    keys = [k for k, _ in out]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise HarnessError(f"--axis {repeated[0]} is given more than once; put all its values in one --axis "
                           f"{repeated[0]}=v1,v2,...")
    return out


def cells(cfg: Config, axes: list[tuple[str, list[str]]]) -> list[Cell]:
    """Every combination of the axes' values applied to the base config (each checked like --set)."""
    if not axes:
        return [Cell("all", cfg)]
    out = []
    for values in itertools.product(*(v for _, v in axes)):
        updates = dict(zip((k for k, _ in axes), values))
        out.append(Cell(" ".join(f"{k}={v}" for k, v in updates.items()), config.apply(cfg, updates)))
    return out


def plan_of(study: optuna.Study) -> tuple[Config, list[Cell], list[int]]:
    plan = study.user_attrs.get(PLAN)
    if plan is None:
        raise HarnessError(f"study {study.study_name!r} is not a grid (no plan in it): start it with `harness grid`")
    cfg = config.apply(Config(), plan["config"])
    return cfg, cells(cfg, [tuple(a) for a in plan["axes"]]), plan["seeds"]


def plan(study: optuna.Study, cfg: Config, axes, seeds: list[int]) -> int:
    """Store the grid in the study and enqueue the (cell, seed) items it does not hold yet; return how
    many were added. The same grid with more seeds or values grows; another base config is refused."""
    flat = {k: v for k, v in config.flat(cfg).items() if k != "device"}
    held = study.user_attrs.get(PLAN)
    if held is not None and held["config"] != flat:
        raise HarnessError(f"study {study.study_name!r} holds a grid of another base config; give a new --study name")
    old_axes = dict((k, v) for k, v in (held or {}).get("axes", []))
    merged = [(k, list(dict.fromkeys(old_axes.get(k, []) + v))) for k, v in axes]
    if held is not None and set(old_axes) != {k for k, _ in axes}:
        raise HarnessError(f"study {study.study_name!r} has the axes {', '.join(old_axes) or 'none'}; grow it "
                           "along those, or give a new --study name")
    all_seeds = sorted(set((held or {}).get("seeds", [])) | set(seeds))
    study.set_user_attr(PLAN, {"config": flat, "axes": merged, "seeds": all_seeds})
    have = {(t.user_attrs.get("cell"), t.user_attrs.get("seed")) for t in study.get_trials(deepcopy=False)
            if t.state != FAIL}
    added = 0
    for cell in cells(cfg, merged):
        for seed in all_seeds:
            if (cell.label, seed) not in have:
                study.enqueue_trial({}, user_attrs={"cell": cell.label, "seed": seed})
                added += 1
    return added


def mde(n: int, sd: float = 1.5, power: float = 0.8, alpha: float = 0.05) -> float:
    """Minimum detectable mean paired delta (points) of a two-sided paired t-test with n seeds, for a
    paired-delta standard deviation `sd` (points; ~1.5 measured at 1000 images per class)."""
    from scipy import optimize, stats
    if n < 2:
        return float("inf")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(d):
        nc = d / sd * n ** 0.5
        achieved = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        return (1.0 if achieved != achieved else achieved) - power  # far tails: NaN means all the power
    return float(optimize.brentq(shortfall, 1e-6, 50 * sd))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error rate), NaNs left as they are."""
    idx = sorted((i for i, p in enumerate(pvalues) if p == p), key=lambda i: pvalues[i])
    out, running = list(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


# ---------------------------------------------------------------------------------------------
# Workers

class _TrialHeartbeat:
    """Optuna's heartbeat for a trial a worker claimed by hand: what `study.optimize` does for its own."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="harness-item-heartbeat")

    def _beat(self):
        while not self.stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass  # a store that comes and goes: the next beat tries again
            self.stop.wait(max(1.0, liveness.interval()))

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def _claim_item(study: optuna.Study):
    """A WAITING item switched to RUNNING by this worker (atomic in the storage), or None."""
    storage, study_id = study._storage, study._study_id  # noqa: SLF001 (Optuna exposes no public claim)
    for t in study.get_trials(deepcopy=False, states=(WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if storage.set_trial_state_values(trial_id, RUNNING):
            return trial_id, t.user_attrs["cell"], int(t.user_attrs["seed"])
    return None


def _grid_run(ctx: Context, study: optuna.Study, created: bool, cfg: Config):
    return studies.study_run(ctx, study, created, {**config.flat(cfg), "grid.study": study.study_name},
                             f"grid {study.study_name}", {"harness.preset": cfg.preset}, phase="grid")


def open_run(ctx: Context, study: optuna.Study, created: bool) -> str:
    """The grid's MLflow run, opened (and left FINISHED) by the command that planned it, so that the
    workers that come later join it instead of racing to open one each."""
    with _grid_run(ctx, study, created, plan_of(study)[0]) as parent:
        return parent.run_id


def work(ctx: Context, study: optuna.Study, created: bool) -> str | None:
    """Pull items until none is left; the worker that finishes the last one logs the report. Returns
    the grid run's id. With study.share_gan, each cell's seeds share one generator, trained on the
    data draw of the grid's first seed (claimed like any long phase, so workers wait for it)."""
    cfg, grid_cells, seeds = plan_of(study)
    by_label = {c.label: c for c in grid_cells}
    storage = study._storage  # noqa: SLF001
    n_items = len(grid_cells) * len(seeds)
    click.echo(f"grid {study.study_name!r}: {len(grid_cells)} cells x {len(seeds)} seeds = {n_items} items; "
               f"minimum detectable effect at 80% power with {len(seeds)} seeds: {mde(len(seeds)):.2f} points "
               "(paired-delta SD 1.5)", err=True)
    with _grid_run(ctx, study, created, cfg) as parent:
        while True:
            studies.fail_stale(study)
            item = _claim_item(study)
            if item is None:
                if study.get_trials(deepcopy=False, states=(RUNNING,)):
                    ctx.store.check_reachable()
                    time.sleep(min(2.0, liveness.interval()))  # others' items: one may die and come back
                    continue
                break
            trial_id, label, seed = item
            cell = by_label[label]
            click.echo(f"=== grid item: {label}, seed {seed}", err=True)
            with _TrialHeartbeat(storage, trial_id):
                try:
                    # The plan keeps `auto` precisions: each worker runs what its own machine has.
                    local = precision.resolve_config(cell.cfg, ctx.device)
                    scfg = pipeline.seeded(local, seed)
                    share = cfg.study.share_gan and generators.get(cell.cfg.generator.kind).TRAINS
                    note = f"\n\nGenerator shared across the cell's seeds: trained once on seed {seeds[0]}'s images." if share else ""
                    result = pipeline.run(ctx, scfg, gan_cfg=pipeline.seeded(local, seeds[0]) if share else None,
                                          note=note, reuse_shared=share and seed != seeds[0],
                                          tags={"harness.cell": label, "harness.grid": study.study_name})
                except HarnessError as e:  # this item fails alone, with its reason; the others go on
                    storage.set_trial_user_attr(trial_id, "error", str(e)[:500])
                    storage.set_trial_state_values(trial_id, FAIL)
                    click.echo(f"grid item {label}, seed {seed} failed: {e}", err=True)
                    continue
                except BaseException:
                    storage.set_trial_state_values(trial_id, FAIL)  # retried by the next worker's stale check
                    raise
                storage.set_trial_user_attr(trial_id, "pipeline_run", result.run_id)
                storage.set_trial_state_values(trial_id, COMPLETE, [result.results["compare"].deltas["delta/accuracy"]])
        if not study.get_trials(deepcopy=False, states=(WAITING, RUNNING)):
            report_md, _ = report(ctx, study, parent.run_id)
            click.echo(report_md, nl=False)
    return parent.run_id


def summarize(reports: list[tuple[str, object]]) -> list[dict]:
    """One row per cell from its SeedReport (None: no finished item): arms' accuracy mean +- std, the
    paired delta's tests, and the t-test p Holm-adjusted across the cells that have one."""
    import numpy as np
    rows = []
    for label, rep in reports:
        if rep is None:
            rows.append({"cell": label, "n": 0})
            continue
        acc = rep.stats[0]
        spread = (lambda v: float(np.std(v, ddof=1)) if rep.n > 1 else 0.0)  # noqa: E731
        rows.append({"cell": label, "n": rep.n, "baseline_mean": float(np.mean(acc.base)),
                     "baseline_std": spread(acc.base), "synthetic_mean": float(np.mean(acc.aug)),
                     "synthetic_std": spread(acc.aug), **acc.tests(), "verdict": rep.verdict()})
    tested = sum(1 for r in rows if r["n"] >= 2 and not math.isnan(r.get("t_p", float("nan"))))
    for row, p in zip(rows, holm([r.get("t_p", float("nan")) for r in rows])):
        row["holm_p"] = p
        if row["n"] >= 2 and not math.isnan(p) and tested > 1:
            # Several cells tested at once: the verdict is the Holm-adjusted one, so that one lucky
            # cell among many does not read as a finding.
            basis = f"paired t-test over {row['n']} seeds, p = {row['t_p']:.3g}, Holm-adjusted over {tested} cells {p:.3g}"
            row["verdict"] = (f"significant {'gain' if row['delta_mean'] > 0 else 'loss'} ({basis})" if p < 0.05
                              else f"no significant difference ({basis})")
    return rows


def dose_response(rows: list[dict], axes: list[tuple[str, list[str]]]):
    """The paired accuracy delta (points, with its 95% CI as a band) against the first numeric axis, one
    line per combination of the other axes' values; None when no axis is numeric."""
    def number(v):
        try:
            return float(v)
        except ValueError:
            return None
    numeric = [k for k, values in axes if all(number(v) is not None for v in values)]
    if not numeric:
        return None
    from harness.metrics import subplots, tight
    x_key = numeric[0]
    lines: dict[str, list[tuple[float, dict]]] = {}
    for row in rows:
        if not row["n"]:
            continue
        parts = dict(p.split("=", 1) for p in row["cell"].split(" "))
        other = " ".join(f"{k}={v}" for k, v in parts.items() if k != x_key) or "delta"
        lines.setdefault(other, []).append((float(parts[x_key]), row))
    fig, ax = subplots(figsize=(6.5, 4))
    for label, pts in lines.items():
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ax.plot(xs, [100 * r["delta_mean"] for _, r in pts], marker="o", label=label)
        ax.fill_between(xs, [100 * r["ci_low"] for _, r in pts], [100 * r["ci_high"] for _, r in pts], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(x_key)
    ax.set_ylabel("synthetic arm - baseline, accuracy points (95% CI)")
    ticks = sorted({x for pts in lines.values() for x, _ in pts})
    if all(x > 0 for x in ticks):
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    tight(fig)
    return fig


def report(ctx: Context, study: optuna.Study, parent_id: str | None = None) -> tuple[str, dict]:
    """Per cell: baseline and synthetic arm mean +- std, the paired delta with its 95% CI, paired t p,
    Holm-adjusted across cells, verdict; from the finished items. Logged on the grid run if given."""
    from harness.compare import runs as cruns
    from harness.compare import stats
    cfg, grid_cells, seeds = plan_of(study)
    done = {}
    for t in study.get_trials(deepcopy=False, states=(COMPLETE,)):
        done.setdefault(t.user_attrs["cell"], []).append(t)
    reports = []
    for cell in grid_cells:
        trials = sorted(done.get(cell.label, []), key=lambda t: t.user_attrs["seed"])
        pairs = [cruns.Pair(str(t.user_attrs["seed"]), *cruns.runs_of_pipeline(t.user_attrs["pipeline_run"]))
                 for t in trials]
        reports.append((cell.label, stats.seed_report(pairs) if pairs else None))
    rows = summarize(reports)
    n_seeds = min([r["n"] for r in rows if r["n"]] or [0])
    out = {"study": study.study_name, "seeds": seeds, "mde_points": mde(n_seeds) if n_seeds else None, "cells": rows}
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [f"grid `{study.study_name}`: {len(grid_cells)} cells, seeds {', '.join(map(str, seeds))}; minimum "
             f"detectable effect (80% power, paired-delta SD 1.5 points): {out['mde_points'] or float('nan'):.2f} points\n",
             "| cell | n | baseline % | synthetic % | delta [95% CI] | t p | Holm p | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['cell']} | 0 | | | | | | no finished item |")
            continue
        lines.append(f"| {r['cell']} | {r['n']} | {pct(r['baseline_mean'])} ± {pct(r['baseline_std'])} | "
                     f"{pct(r['synthetic_mean'])} ± {pct(r['synthetic_std'])} | {100 * r['delta_mean']:+.2f} "
                     f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] | {r['t_p']:.3g} | {r['holm_p']:.3g} | "
                     f"{r['verdict']} |")
    md = "\n".join(lines) + "\n"
    if parent_id is not None:
        client = ctx.store.client
        client.log_text(parent_id, md, "grid.md")
        client.log_text(parent_id, json.dumps(out, indent=2, default=float), "grid.json")
        fig = dose_response(rows, [tuple(a) for a in study.user_attrs[PLAN]["axes"]])
        if fig is not None:
            codecs.log_figure(fig, "grid.png", run_id=parent_id, client=client)
        store.log_batch(tags={NOTE: f"**Grid** `{study.study_name}`\n\n{md}"}, run_id=parent_id)
    return md, out


def join_grid(name: str, storage: str, wait: float = 60.0) -> optuna.Study:
    """A worker's view of a grid planned elsewhere; started first, it waits a while for the plan."""
    deadline, said = time.time() + wait, False
    while True:
        try:
            study, _ = open_grid(name, storage, create=False)
            if PLAN in study.user_attrs:
                return study
        except KeyError:  # not created yet: the planner may still be starting
            pass
        if time.time() > deadline:
            raise HarnessError(f"no grid {name!r} in {mask(storage)}: plan it with `harness grid --study {name} "
                               "--storage URL --plan-only` (or run `harness grid` there)")
        if not said:
            click.echo(f"worker: no grid {name!r} in {mask(storage)} yet; waiting up to {wait:.0f} s for it to be "
                       "planned", err=True)
            said = True
        time.sleep(1.0)


def open_grid(name: str, storage: str, create: bool = True) -> tuple[optuna.Study, bool]:
    # Items are enqueued, never sampled: the sampler only has to be pinned.
    return studies.open_study(name, storage, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(),
                              create=create)

