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
  recomputing. The trial's value is the pair's images' effect (synthetic - control) on accuracy.
- The report (grid.md, grid.json, grid.png: the effect per cell with its CI, a panel per regime, the data
  sizes as categories, a marker per generator; worth.png with an oracle ladder; report.html: all of it in
  one page) is logged on the grid run by the worker that finishes the last item.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import threading
from dataclasses import dataclass

import optuna

from harness import config, generators, pipeline, precision, studies, table
from harness.compare import stats
from harness.config import Config
from harness.context import Context
from harness.errors import HarnessError, mask
from harness.phases import compare, pretrain
from harness.tracking import codecs, liveness, store
from harness.tracking.store import NOTE

PLAN = "harness.grid"  # study user attr: what the grid is (base config, axes, seeds)
WAITING, RUNNING = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
PRUNED = optuna.trial.TrialState.PRUNED  # a duplicate of an item another trial holds


@dataclass(frozen=True)
class Cell:
    label: str  # "data.n_per_class=10 generator.kind=oracle"; "all" without axes
    cfg: Config
    rung: int | None = None  # an --oracle-ladder cell: the real images it adds


JOIN = "+"  # a joint axis: keys that vary together, `a.x+b.y=1+2,3+4` (cells a.x=1 b.y=2 and a.x=3 b.y=4)


def parse_axes(axes: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    out = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        key = JOIN.join(k.strip() for k in key.split(JOIN))
        items = [JOIN.join(p.strip() for p in v.split(JOIN)) for v in values.split(",") if v.strip()]
        if not sep or not all(key.split(JOIN)) or not items:
            raise HarnessError(f"--axis takes section.key=v1,v2,... (or a.x+b.y=1+2,3+4 for keys that vary "
                               f"together), got {axis!r}")
        if len(set(items)) != len(items):
            raise HarnessError(f"--axis {axis!r} repeats a value")
        width = len(key.split(JOIN))
        if wrong := next((v for v in items if len(v.split(JOIN)) != width), None):
            raise HarnessError(f"--axis {key}: its value {wrong!r} has {len(wrong.split(JOIN))} part(s) for "
                               f"{width} key(s); give one value per key, joined by {JOIN!r}")
        if seeded := next((k for k in key.split(JOIN) if k in config.fields_where("seed")), None):
            raise HarnessError(f"--axis {seeded}: seeds are the grid's --seeds, not an axis")
        out.append((key, items))
    keys = [k for key, _ in out for k in key.split(JOIN)]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise HarnessError(f"--axis {repeated[0]} is given more than once; put all its values in one --axis "
                           f"{repeated[0]}=v1,v2,...")
    return out


LADDER_AXES = ("generator.kind", "generate.n_samples")  # what an oracle rung sets; its other axes are its cell's


def cells(cfg: Config, axes: list[tuple[str, list[str]]], ladder: list[int] | tuple = ()) -> list[Cell]:
    """Every combination of the axes' values applied to the base config (each checked like --set);
    with a `ladder`, oracle cells at those image counts (0: the replay control) beside them, one set per combination of the
    other axes (a data size, say), whose baselines are the same runs as every cell of that size."""
    if not axes:
        out = [Cell("all", cfg)]
    else:
        out = []
        for values in itertools.product(*(v for _, v in axes)):
            updates = _updates(zip((k for k, _ in axes), values))
            out.append(Cell(" ".join(f"{k}={v}" for k, v in updates.items()), config.apply(cfg, updates)))
    rungs = []
    if ladder and (both := next((k for k, _ in axes if JOIN in k and set(k.split(JOIN)) & set(LADDER_AXES)), None)):
        raise HarnessError(f"--axis {both}: with --oracle-ladder, {' and '.join(LADDER_AXES)} are the ladder's own "
                           "axes and cannot vary jointly with another key; give them an --axis of their own")
    for values in itertools.product(*(v for k, v in axes if k not in LADDER_AXES)):
        others = _updates(zip((k for k, _ in axes if k not in LADDER_AXES), values))
        for n in ladder:
            # Rung 0: no real image added, the synthetic arm's recipe alone (the replay control).
            updates = {**others, **({"generator.kind": "replay"} if n == 0 else
                                    {"generator.kind": "oracle", "generate.n_samples": n})}
            label = " ".join(f"{k}={v}" for k, v in updates.items())
            if label not in {c.label for c in out + rungs}:
                rungs.append(Cell(label, config.apply(cfg, updates), n))
    return out + rungs


def _updates(pairs) -> dict[str, str]:
    """One cell's settings from (axis, value) pairs, a joint axis's keys and values taken apart."""
    return {k: v for key, value in pairs for k, v in zip(key.split(JOIN), value.split(JOIN))}


def axis_keys(axes) -> list[str]:
    """Every config key the axes set, a joint axis's each (the columns a user compares cells by)."""
    return [k for key, _ in axes for k in key.split(JOIN)]


def ladder_group(cfg: Config) -> str:
    """What an oracle rung shares with the cells it prices: everything but the generator and its count.
    Every field, those no key hashes included: classifier.init (a key holds its weights' digest) tells a
    fine-tuned cell's rungs from a scratch one's."""
    plain = dataclasses.replace(cfg, generator=config.GeneratorConfig(), gan=config.GanConfig(),
                                diffusion=config.DiffusionConfig(), text2image=config.Text2ImageConfig(),
                                generate=dataclasses.replace(cfg.generate, n_samples=1))
    fields = {k: v for k, v in config.to_dict(plain).items() if k not in config.UNHASHED}
    return json.dumps(fields, sort_keys=True, default=str)


def _items(study: optuna.Study) -> dict[tuple[str, int], list]:
    """(cell, seed) -> its trials, oldest first, leaving out failed ones and the duplicates workers
    pruned: a handed-back or retried item is a new trial of the same (cell, seed)."""
    out: dict[tuple[str, int], list] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in (FAIL, PRUNED) or "cell" not in t.user_attrs:
            continue
        out.setdefault((t.user_attrs["cell"], int(t.user_attrs["seed"])), []).append(t)
    return out


def extend(study: optuna.Study) -> int:
    """With a CI half-width target, once a cell's first seeds are all done: the seeds their spread
    says the cell needs (compare.stats.seeds_needed), as new items; how many were added. Decided from
    the first seeds alone, so a rerun, or two workers deciding at once, ask for the same seeds (a
    duplicate item is pruned when claimed, `_claim_item`)."""
    held = study.user_attrs.get(PLAN) or {}
    if halfwidth_of(held) is None:
        return 0
    _, grid_cells, seeds = plan_of(study)
    items = _items(study)
    added = 0
    for cell in grid_cells:
        first = [items.get((cell.label, s)) for s in seeds]
        if not all(ts and ts[0].state == COMPLETE for ts in first):
            continue  # its first seeds are not all done (or one failed): nothing to decide from yet
        target, _ = stats.seeds_needed([ts[0].value for ts in first], halfwidth_of(held), held["max_seeds"])
        # Every seed tried counts, a failed one too: a seed that cannot run is not replaced again and again.
        tried = {int(t.user_attrs["seed"]) for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("cell") == cell.label and not t.user_attrs.get("duplicate")}
        for seed in range(max(tried) + 1, max(tried) + 1 + target - len(tried)):
            study.enqueue_trial({}, user_attrs={"cell": cell.label, "seed": seed})
            added += 1
    return added


def cost(study: optuna.Study) -> str:
    """What the grid will compute, before anything runs: items, and generators to train (one per
    distinct generator setting of the cells and generator index; the cache shares the rest)."""
    cfg, grid_cells, seeds = plan_of(study)
    held = study.user_attrs[PLAN]
    k, most = held["generators"], held["max_seeds"]
    training = [c for c in grid_cells if generators.get(c.cfg.generator.kind).TRAINS]
    distinct = {config.config_hash(c.cfg, table.PHASES["generator"].reads(c.cfg)[0]) for c in training}
    line = (f"{len(grid_cells)} cells x {len(seeds)} seeds = {len(grid_cells) * len(seeds)} items")
    if halfwidth_of(held) is not None:
        line += (f", up to {len(grid_cells) * most} with --ci-halfwidth {halfwidth_of(held):g} "
                 f"(at most {most} seeds a cell)")
    if training:
        line += (f"; generator trainings: {len(distinct)} generator setting(s) x K = {min(k, len(seeds))} = "
                 f"{len(distinct) * min(k, len(seeds))}")
    return line


def halfwidth_of(held: dict) -> float | None:
    """The plan's CI half-width target (points), under its name before 0.2 too (`precision`)."""
    return held.get("halfwidth", held.get("precision"))


def plan_of(study: optuna.Study) -> tuple[Config, list[Cell], list[int]]:
    plan = study.user_attrs.get(PLAN)
    if plan is None:
        raise HarnessError(f"study {study.study_name!r} is not a grid (no plan in it): start it with `harness grid`")
    cfg = config.apply(Config(), plan["config"])
    return cfg, cells(cfg, [tuple(a) for a in plan["axes"]], plan.get("ladder", ())), plan["seeds"]


def generators_of(cfg: Config, seeds: list[int]) -> int:
    """K, the generators a cell's seeds share (seed s uses generator s mod K, trained on seed s mod
    K's data draw): seeds.generators, else 1 with seeds.share_generator, else min(seeds, 3)."""
    if cfg.seeds.generators:
        return cfg.seeds.generators
    return 1 if cfg.seeds.share_generator else min(len(seeds), 3)


def check_seeds(seeds: int, halfwidth: float | None, max_seeds: int | None, say) -> int | None:
    """The grid's seed options, checked where they enter: a finite half-width > 0, at least 2 first
    seeds to measure a spread, --max-seeds no fewer than --seeds; --max-seeds without a half-width
    is said to be ignored. Returns the most seeds a cell gets (None: fixed at --seeds)."""
    if halfwidth is None:
        if max_seeds is not None:
            say(f"note: --max-seeds {max_seeds} is ignored without --ci-halfwidth (every cell runs --seeds {seeds})")
        return None
    if not math.isfinite(halfwidth) or halfwidth <= 0:
        raise HarnessError(f"--ci-halfwidth takes a finite number of points > 0 (e.g. 1.0), got {halfwidth:g}")
    if seeds < 2:
        raise HarnessError("--ci-halfwidth needs at least 2 seeds per cell to measure the spread: --seeds 2 or more")
    max_seeds = 20 if max_seeds is None else max_seeds
    if max_seeds < seeds:
        raise HarnessError(f"--max-seeds {max_seeds} is below --seeds {seeds}: every cell starts with {seeds} seeds; "
                           f"give --max-seeds {seeds} or more")
    return max_seeds


def parse_ladder(text: str | None) -> list[int]:
    """--oracle-ladder 0,150,500,1500: distinct image counts >= 0 (0: the replay control)."""
    if text is None:
        return []
    try:
        rungs = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HarnessError(f"--oracle-ladder takes image counts like 150,500,1500, got {text!r}") from None
    if not rungs or min(rungs) < 0 or len(set(rungs)) != len(rungs) or rungs == [0]:
        raise HarnessError(f"--oracle-ladder takes distinct image counts >= 0 like 0,150,500,1500 (and one > 0), "
                           f"got {text!r}")
    return sorted(rungs)


def check_generators(cfg: Config, seeds: int) -> None:
    """K, the generators of a cell, is trained by its first K seeds: no more than it has."""
    if cfg.seeds.generators > seeds:
        raise HarnessError(f"seeds.generators={cfg.seeds.generators} asks for more generators per cell than the "
                           f"{seeds} first seeds that train them (seed s uses generator s mod K): give "
                           f"--seeds {cfg.seeds.generators} or more, or seeds.generators <= {seeds}")


def planned(study: optuna.Study, created: bool, cfg: Config, axes, seeds: list[int], halfwidth: float | None,
            max_seeds: int | None, say, ladder: list[int] | None = None, margin: float | None = None) -> tuple[int, bool]:
    """`plan`, by a command that may have just created the study: (items added, whether this command
    made the grid). A refused plan leaves no study behind (its name would wait for a plan that never
    comes), and an empty study that a refused command of an older version left is planned as new."""
    fresh = created or PLAN not in study.user_attrs
    try:
        return plan(study, cfg, axes, seeds, halfwidth, max_seeds, say=say, ladder=ladder, margin=margin), fresh
    except BaseException:
        if fresh:
            optuna.delete_study(study_name=study.study_name, storage=studies.storage_of(study)[0])
        raise


def plan(study: optuna.Study, cfg: Config, axes, seeds: list[int], halfwidth: float | None = None,
         max_seeds: int | None = None, say=None, ladder: list[int] | None = None, margin: float | None = None) -> int:
    """Store the grid in the study and enqueue the (cell, seed) items it does not hold yet; return how
    many were added. The same grid with more seeds or values grows; another base config is refused.
    With `halfwidth` (points), a cell whose first seeds' 95% CI is wider gets more seeds, up to
    `max_seeds`, once those are done (`extend`). A setting that changes a plan already held is said
    in one line (`say`)."""
    flat = {k: v for k, v in config.flat(cfg).items() if k != "device"}
    held = study.user_attrs.get(PLAN)
    if held is not None:
        # A setting the plan's harness did not have yet held its default there: an upgrade is no new config.
        defaults = {k: v for k, v in config.flat(Config()).items() if k != "device"}
        differ = [k for k in flat if held["config"].get(k, defaults.get(k)) != flat[k]]
        if differ:
            k = differ[0]
            raise HarnessError(f"study {study.study_name!r} holds a grid of another base config ({k} = "
                               f"{held['config'].get(k, defaults.get(k))!r} there, {flat[k]!r} here"
                               f"{f', and {len(differ) - 1} more' if len(differ) > 1 else ''}); give a new --study name")
    old_axes = dict((k, v) for k, v in (held or {}).get("axes", []))
    merged = [(k, list(dict.fromkeys(old_axes.get(k, []) + v))) for k, v in axes]
    if held is not None and set(old_axes) != {k for k, _ in axes}:
        raise HarnessError(f"study {study.study_name!r} has the axes {', '.join(old_axes) or 'none'}; grow it "
                           "along those, or give a new --study name")
    all_seeds = sorted(set((held or {}).get("seeds", [])) | set(seeds))
    before = {"halfwidth": halfwidth_of(held or {}), "max_seeds": (held or {}).get("max_seeds")}
    halfwidth = halfwidth if halfwidth is not None else before["halfwidth"]
    max_seeds = max(max_seeds or before["max_seeds"] or 0, len(all_seeds))
    if halfwidth is not None and len(all_seeds) < 2:
        raise HarnessError("--ci-halfwidth needs at least 2 seeds per cell to measure the spread: --seeds 2 or more")
    check_generators(cfg, len(all_seeds))
    k = (held or {}).get("generators") or generators_of(cfg, all_seeds)
    ladder = sorted(set((held or {}).get("ladder", [])) | set(ladder or []))
    before["margin"] = (held or {}).get("margin")
    margin = margin if margin is not None else (before["margin"] or stats.MARGIN)
    if held is not None and say is not None and before["margin"] is not None and margin != before["margin"]:
        say(f"grid {study.study_name!r}: the equivalence margin changes from {before['margin']:g} to {margin:g} points")
    if held is not None and say is not None:
        for name, old, new in (("CI half-width target", before["halfwidth"], halfwidth),
                               ("most seeds a cell", before["max_seeds"], max_seeds)):
            if old is not None and new != old:
                say(f"grid {study.study_name!r}: the {name} changes from {old:g} to {new:g} (the plan held {old:g})")
    study.set_user_attr(PLAN, {"config": flat, "axes": merged, "seeds": all_seeds, "halfwidth": halfwidth,
                               "max_seeds": max_seeds, "generators": k, "ladder": ladder, "margin": margin})
    have = {(t.user_attrs.get("cell"), t.user_attrs.get("seed")) for t in study.get_trials(deepcopy=False)
            if t.state != FAIL}
    added = 0
    for cell in cells(cfg, merged, ladder):
        for seed in all_seeds:
            if (cell.label, seed) not in have:
                study.enqueue_trial({}, user_attrs={"cell": cell.label, "seed": seed})
                added += 1
    return added


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
    storage, study_id = studies.storage_of(study)
    for t in study.get_trials(deepcopy=False, states=(WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if storage.set_trial_state_values(trial_id, RUNNING):
            cell, seed = t.user_attrs["cell"], int(t.user_attrs["seed"])
            if _items(study)[(cell, seed)][0].number != t.number:
                # Two workers extended the grid at once and enqueued the same seed twice: the oldest
                # trial of a (cell, seed) is the item, this one steps aside.
                storage.set_trial_user_attr(trial_id, "duplicate", True)
                storage.set_trial_state_values(trial_id, PRUNED)
                continue
            return trial_id, cell, seed
    return None


def _grid_run(ctx: Context, study: optuna.Study, created: bool, cfg: Config):
    save_views(ctx.store, study)
    return studies.study_run(ctx, study, created, {**config.flat(cfg), "grid.study": study.study_name},
                             f"grid {study.study_name}", {"harness.preset": cfg.preset}, phase="grid")


VIEW = "mlflow.sharedViewState."  # the MLflow UI (>= 3.15) reads a saved view from this experiment tag
# Columns of the saved views: accuracy in percent and points with two decimals (pipeline.run logs them beside
# the fractions). The UI orders metric columns by name, so few: the baseline, then the images' effect.
HEADLINE = ("baseline/percent", "delta/points", "kept/count")  # recipe not controlled
CONTROLLED = ("baseline/percent", "images/points", "kept/count", "recipe/points")


def view_keys(study_name: str) -> dict[str, str]:
    """The share keys of a grid's two views of the runs table: `table` and `chart`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)
    return {"table": f"grid-{safe}", "chart": f"grid-{safe}-chart"}


def views(study_name: str, axes: list[str], controlled: bool = True) -> dict[str, dict]:
    """What a user looks at to compare the cells, as MLflow UI saved views: the grid's pipelines grouped
    by cell (each group's row is its seeds' mean), with the cell's axes and the headline metrics as
    columns, sorted by the images' effect (synthetic - control; without a control, the delta); and the
    same groups as a bar chart of it per cell."""
    lead = "images/points" if controlled else "delta/points"
    base = {"searchFilter": f"tags.`harness.grid` = '{study_name}' AND tags.`harness.phase` = 'pipeline'",
            "orderByKey": f"metrics.`{lead}`", "orderByAsc": False, "runsHiddenMode": "SHOW_ALL",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "harness.cell"}]}}
    columns = [f"metrics.`{m}`" for m in (CONTROLLED if controlled else HEADLINE)] + [f"params.`{a}`" for a in axes]
    return {"table": {**base, "selectedColumns": columns},
            "chart": {**base, "chartsSearchFilter": f"^{lead}$", "useGroupedValuesInCharts": True,
                      "hideEmptyCharts": True}}


def view_urls(client, experiment_id: str, base: str) -> list[str]:
    """`grid NAME: URL` for each grid view saved in the experiment (`harness ui` prints them)."""
    exp = client.get_experiment(experiment_id)
    keys = sorted(k[len(VIEW):] for k in exp.tags if k.startswith(VIEW + "grid-"))
    mode = {False: "TABLE", True: "CHART"}
    return [f"{k}: {base}/#/experiments/{experiment_id}/runs?viewStateShareKey={k}&compareRunsMode={mode[k.endswith('-chart')]}"
            for k in keys]


def save_views(s: store.Store, study: optuna.Study) -> None:
    held = study.user_attrs.get(PLAN, {})
    axes = axis_keys(held.get("axes", []))
    if held.get("ladder") and "generate.n_samples" not in axes:
        axes.append("generate.n_samples")
    keys = view_keys(study.study_name)
    for name, state in views(study.study_name, axes, plan_of(study)[0].control.enabled).items():
        s.client.set_experiment_tag(s.experiment_id, VIEW + keys[name], json.dumps(state))


def open_run(ctx: Context, study: optuna.Study, created: bool) -> str:
    """The grid's MLflow run, opened (and left FINISHED) by the command that planned it, so that the
    workers that come later join it instead of racing to open one each."""
    with _grid_run(ctx, study, created, plan_of(study)[0]) as parent:
        return parent.run_id


def work(ctx: Context, study: optuna.Study, created: bool) -> tuple[str, str | None]:
    """Pull items until none is left; the worker that finishes the last one logs the report. Returns
    the grid run's id, and the report from that worker (None from the others). With seeds.share_generator,
    each cell's seeds share one generator, trained on the data draw of the grid's first seed (claimed
    like any long phase, so workers wait for it)."""
    cfg, grid_cells, seeds = plan_of(study)
    by_label = {c.label: c for c in grid_cells}
    storage, _ = studies.storage_of(study)
    k = study.user_attrs[PLAN].get("generators") or generators_of(cfg, seeds)
    n_items = len(grid_cells) * len(seeds)
    ctx.store.say(f"grid {study.study_name!r}: {len(grid_cells)} cells x {len(seeds)} seeds = {n_items} items; "
                  f"minimum detectable effect at 80% power with {len(seeds)} seeds: {stats.mde(len(seeds)):.2f} "
                  "points (paired-delta SD 1.5)")
    with _grid_run(ctx, study, created, cfg) as parent:
        while True:
            studies.fail_stale(study)
            item = _claim_item(study)
            if item is None:
                if study.get_trials(deepcopy=False, states=(RUNNING,)):
                    ctx.store.pause()  # others' items: one may die and come back
                    continue
                if (more := extend(study)):
                    ctx.store.say(f"grid {study.study_name!r}: {more} more item(s) for the cells above the "
                                  f"CI half-width target")
                    continue
                break
            trial_id, label, seed = item
            cell = by_label[label]
            ctx.store.say(f"=== grid item: {label}, seed {seed}")
            with _TrialHeartbeat(storage, trial_id):
                try:
                    # The plan keeps `auto` precisions: each worker runs what its own machine has.
                    local = precision.resolve_config(pretrain.with_classes(cell.cfg, ctx.data_dir), ctx.device)
                    scfg = pipeline.seeded(local, seed)
                    trains = generators.get(cell.cfg.generator.kind).TRAINS
                    own = seed % k  # this seed's generator, trained on that seed's data draw
                    note = (f"\n\nGenerator {own} of the cell's {k}: trained on seed {own}'s images." if trains else "")
                    # Its own generator is simply the pipeline's (no second walk under an equal config),
                    # unless every seed shares fewer generators than there are first seeds (share_generator's mark).
                    borrowed = trains and (own != seed or k < len(seeds))
                    result = pipeline.run(ctx, scfg, generator_cfg=pipeline.seeded(local, own) if borrowed else None,
                                          note=note, reuse_shared=trains and own != seed,
                                          tags={"harness.cell": label, "harness.grid": study.study_name,
                                                **({"harness.generator_index": own} if trains else {})})
                except HarnessError as e:  # this item fails alone, with its reason; the others go on
                    storage.set_trial_user_attr(trial_id, "error", str(e)[:500])
                    storage.set_trial_state_values(trial_id, FAIL)
                    ctx.store.say(f"grid item {label}, seed {seed} failed: {e}")
                    continue
                except KeyboardInterrupt:
                    # Stopped (SIGTERM from a scheduler's time limit, preemption or `scancel`; Ctrl-C):
                    # the item is not done, so a copy goes back in the queue for the next worker, whose
                    # pipeline reuses the finished phases and continues the interrupted generator.
                    # The copy first: a worker that saw neither a WAITING nor a RUNNING item would leave.
                    study.enqueue_trial({}, user_attrs={"cell": label, "seed": seed, "handed_back": True})
                    storage.set_trial_state_values(trial_id, FAIL)
                    raise
                except BaseException:
                    storage.set_trial_state_values(trial_id, FAIL)  # a crash: handed back, it would crash again
                    raise
                try:
                    storage.set_trial_user_attr(trial_id, "pipeline_run", result.run_id)
                    # The item's value is the cell's headline, the images' effect where a control ran: what
                    # the CI half-width rule and the exchange rate read.
                    storage.set_trial_state_values(trial_id, COMPLETE,
                                                   [compare.headline(result.results["compare"].deltas)])
                except optuna.exceptions.UpdateFinishedTrialError:
                    # A loaded machine delayed this worker's heartbeat past the grace period: a peer took
                    # the item for dead and queued it again. Its copy reuses every phase finished here.
                    ctx.store.say(f"grid item {label}, seed {seed}: another worker took it over (this worker's "
                                  "heartbeat came late); its copy reuses the phases finished here")
        if not study.get_trials(deepcopy=False, states=(WAITING, RUNNING)):
            report_md, _ = report(ctx, study, parent.run_id)
            return parent.run_id, report_md
    return parent.run_id, None


def report(ctx: Context, study: optuna.Study, parent_id: str | None = None) -> tuple[str, dict]:
    """Per cell: baseline and synthetic arm mean +- std, the paired delta with its 95% CI, paired t p,
    Holm-adjusted across cells, verdict; from the finished items. Logged on the grid run if given."""
    from harness.compare import page, render
    from harness.compare import runs as cruns
    cfg, grid_cells, seeds = plan_of(study)
    held = study.user_attrs[PLAN]
    done: dict[str, list] = {}
    for (label, _), trials in _items(study).items():
        finished = [t for t in trials if t.state == COMPLETE]
        if finished:  # one per (cell, seed), however often it was handed back
            done.setdefault(label, []).append(finished[0])
    k = held.get("generators") or generators_of(cfg, seeds)
    designs = {c.label: stats.Design(tuple(seeds), halfwidth_of(held), held.get("max_seeds") or len(seeds),
                                     k if generators.get(c.cfg.generator.kind).TRAINS else 0) for c in grid_cells}
    reports = []
    for cell in grid_cells:
        trials = sorted(done.get(cell.label, []), key=lambda t: t.user_attrs["seed"])
        pairs = [cruns.Pair(str(t.user_attrs["seed"]),
                            *cruns.runs_of_pipeline(ctx.store.client, t.user_attrs["pipeline_run"])) for t in trials]
        reports.append((cell.label, stats.seed_report(ctx.store.client, pairs) if pairs else None))
    margin = held.get("margin") or stats.MARGIN
    rows = stats.summarize(reports, designs, margin=margin)
    priced = worth_of(grid_cells, {label: {int(t.user_attrs["seed"]): t.value for t in trials}
                                   for label, trials in done.items()})
    for row in rows:
        row.update(priced.get(row["cell"], {}))
    # At the first seeds, every cell's start: what the plan promised, whatever seeds came later.
    out = {"study": study.study_name, "seeds": seeds, "ci_halfwidth_points": halfwidth_of(held),
           "max_seeds": held.get("max_seeds"), "generators": k, "margin_points": margin,
           "equivalence": stats.EQUIVALENCE_RULE, "oracle_ladder": held.get("ladder", []),
           "mde_points": stats.mde(len(seeds)) if len(seeds) >= 2 else None, "cells": rows}
    md = render.grid_markdown(study.study_name, len(grid_cells), seeds, out["mde_points"], rows,
                              halfwidth=halfwidth_of(held), max_seeds=held.get("max_seeds"), margin=margin)
    keys = view_keys(study.study_name)
    out["ui_views"] = keys
    md += (f"\nIn the MLflow UI (`harness ui` prints the addresses): the saved view `{keys['table']}` lists this "
           f"grid's pipelines grouped by cell (each group's row is its seeds' mean) with the baseline's accuracy in "
           f"percent, the images' effect in points and the cell's axes as columns; `{keys['chart']}` charts the "
           f"images' effect per cell.\n")
    if parent_id is not None:
        client = ctx.store.client
        client.log_text(parent_id, md, "grid.md")
        client.log_text(parent_id, codecs.dumps(out, indent=2, default=float), "grid.json")
        drawn = []
        for fig, path, caption in ((render.grid_figure(rows, [tuple(a) for a in study.user_attrs[PLAN]["axes"]]),
                                    "grid.png", "The images' effect per cell, 95% CI"),
                                   (render.worth_figure(rows), "worth.png", "What the images are worth in real ones")):
            if fig is not None:
                drawn.append((f"{caption} ({path})", page.png(fig)))
                codecs.log_figure(fig, path, run_id=parent_id, client=client)
        page.log(f"Grid {study.study_name}", md, drawn, run_id=parent_id, client=client)
        store.log_batch(tags={NOTE: f"**Grid** `{study.study_name}`\n\n{md}"}, run_id=parent_id, client=ctx.store.client)
    return md, out


def worth_of(grid_cells: list[Cell], deltas: dict[str, dict[int, float]]) -> dict[str, dict]:
    """For each cell of a generator other than the oracle: what its images are worth in real images,
    on the curve of the oracle cells that share everything else with it (compare.stats.worth); the
    oracle cells themselves say where their curve lies. `deltas`: cell -> seed -> accuracy delta."""
    groups: dict[str, dict[int, dict[int, float]]] = {}
    rung = {"oracle": lambda c: c.cfg.generate.n_samples, "replay": lambda c: 0}  # real images each adds
    for c in grid_cells:
        if c.cfg.generator.kind in rung and deltas.get(c.label):
            groups.setdefault(ladder_group(c.cfg), {})[rung[c.cfg.generator.kind](c)] = deltas[c.label]
    out = {}
    for c in grid_cells:
        oracle = groups.get(ladder_group(c.cfg))
        if c.cfg.generator.kind in rung or not oracle or not deltas.get(c.label) or set(oracle) == {0}:
            continue
        w = stats.worth(oracle, deltas[c.label])
        out[c.label] = {"worth": w, "worth_text": stats.worth_words(w, c.cfg.generate.n_samples, c.cfg.generator.kind)}
        if 0 in oracle:  # the replay control: what the images add beyond the recipe, paired seed by seed
            out[c.label]["beyond_replay"] = stats.paired_difference(deltas[c.label], oracle[0])
    return out


def join_grid(name: str, storage: str, wait: float = 60.0, say=liveness.stderr) -> optuna.Study:
    """A worker's view of a grid planned elsewhere; started first, it waits a while for the plan."""
    PLANNER_GAP = 5.0  # s: a planner sets the plan the moment after it creates the study
    exists = False

    def planned():
        nonlocal exists
        try:
            study, _ = open_grid(name, storage, create=False)
        except KeyError:  # not created yet: the planner may still be starting
            return None
        exists = True
        if PLAN in study.user_attrs:
            return study
        if study.user_attrs or study.get_trials(deepcopy=False):  # a planner sets the plan before anything else
            raise HarnessError(f"study {name!r} in {mask(storage)} is not a grid (an Optuna study of another kind, "
                               "a sweep's?); give the --study of a grid, or plan one with `harness grid`")
        return None

    study = planned()
    if study is None and wait > 0:
        if exists:  # an empty study: a planner in its first moment (silent: it is short), or made by other hands
            study = liveness.wait_until(planned, timeout=min(wait, PLANNER_GAP), every=0.5)
        else:
            say(f"worker: no grid {name!r} in {mask(storage)} yet; waiting up to {wait:.0f} s for it to be planned")
            study = liveness.wait_until(planned, timeout=wait, every=1.0)
    if study is None and exists:
        raise HarnessError(f"study {name!r} in {mask(storage)} is an empty Optuna study, not a grid: plan a grid "
                           f"with `harness grid --study NAME --plan-only` under another name (or delete this one)")
    if study is None:
        raise HarnessError(f"no grid {name!r} in {mask(storage)}: plan it with `harness grid --study {name} "
                           "--storage URL --plan-only` (or run `harness grid` there)")
    return study


def open_grid(name: str, storage: str, create: bool = True) -> tuple[optuna.Study, bool]:
    # Items are enqueued, never sampled: the sampler only has to be pinned.
    return studies.open_study(name, storage, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(),
                              create=create)

