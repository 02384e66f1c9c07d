"""A grid's plan: its axes and cells, the seeds per cell, and the (cell, seed) items enqueued in its
Optuna study; how a worker finds a grid planned elsewhere."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import optuna

from harness import config, generators, optuna_storage, table
from harness.analysis import stats
from harness.config import Config
from harness.errors import HarnessError, mask
from harness.tracking import liveness


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
    # One set of rungs per distinct setting of the keys that are not the ladder's own, a joint axis's
    # parts included (a confirmation's one joint axis holds generate.n_samples beside the others).
    groups: list[dict] = []
    for values in itertools.product(*(v for _, v in axes)):
        others = {k: v for k, v in _updates(zip((k for k, _ in axes), values)).items() if k not in LADDER_AXES}
        if others not in groups:
            groups.append(others)
    for others in groups:
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
    kinds = set(generators.names())
    plain = config.with_sections(
        dataclasses.replace(cfg, generator=config.GeneratorConfig(), generate=dataclasses.replace(cfg.generate, n_samples=1)),
        {name: section() for name, section in config.kind_sections().items() if name in kinds})
    fields = {k: v for k, v in config.to_dict(plain).items() if k not in config.UNHASHED}
    return json.dumps(fields, sort_keys=True, default=str)


def items_of(study: optuna.Study) -> dict[tuple[str, int], list]:
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
    says the cell needs (analysis.stats.seeds_needed), as new items; how many were added. Decided from
    the first seeds alone, so a rerun, or two workers deciding at once, ask for the same seeds (a
    duplicate item is pruned when claimed, `work.claim_item`)."""
    held = study.user_attrs.get(PLAN) or {}
    if halfwidth_of(held) is None:
        return 0
    _, grid_cells, seeds = plan_of(study)
    items = items_of(study)
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
    distinct = {_generator_setting(c.cfg) for c in training}
    pretrainings = {config.config_hash(c.cfg, table.PHASES["generator_pretrain"].reads(c.cfg)[0])
                    for c in training if table.PHASES["generator_pretrain"].runs(c.cfg)}
    line = (f"{len(grid_cells)} cells x {len(seeds)} seeds = {len(grid_cells) * len(seeds)} items")
    if halfwidth_of(held) is not None:
        line += (f", up to {len(grid_cells) * most} with --ci-halfwidth {halfwidth_of(held):g} "
                 f"(at most {most} seeds a cell)")
    if training:
        line += (f"; generator trainings: {len(distinct)} generator setting(s) x K = {min(k, len(seeds))} = "
                 f"{len(distinct) * min(k, len(seeds))}")
    if pretrainings:
        line += f", after {len(pretrainings)} generator pretraining(s) on other classes"
    return line


def slots(cell: Cell, seed: int, first: int, k: int) -> tuple[str, ...]:
    """The runs an item shares with other items, which one of them computes while the others wait for it
    (store.wait_for_others): its seed's baseline and control, its generator (one of the cell's K, trained on seed
    `first + (seed - first) % k`'s images) and that generator's pretraining. A worker claims an item none of
    whose slots another worker's item holds, where there is one (work.claim_item): it trains while the
    other does, instead of waiting."""
    cfg = cell.cfg
    # The control replays the real images through the recipe: cells that differ in the generator alone share it.
    out = [f"{phase}:{config.config_hash(cfg, table.PHASES[phase].reads(cfg)[0])}:{seed}"
           for phase in ("baseline", "control") if table.PHASES[phase].runs(cfg)]
    if generators.get(cfg.generator.kind).TRAINS:
        own = first + (seed - first) % k
        out.append(f"generator:{_generator_setting(cfg)!r}:{own}")
        if table.PHASES["generator_pretrain"].runs(cfg):
            out.append(f"generator_pretrain:{config.config_hash(cfg, table.PHASES['generator_pretrain'].reads(cfg)[0])}")
    return tuple(out)


def _generator_setting(cfg: Config) -> tuple:
    """What tells one cell's generator from another's before anything runs: the config its key hashes,
    and the unhashed fields (gan.init: the key holds the weights' content or the pretraining run, known
    only once they exist) whose value tells where the generator starts."""
    sections, upstream, _ = table.PHASES["generator"].reads(cfg)
    where = tuple((name, getattr(getattr(cfg, name.split(".")[0], None), name.split(".")[1], None))
                  for name in config.fields_where("unhashed") if name.split(".")[0] in sections)
    return config.config_hash(cfg, sections), upstream, where


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
            max_seeds: int | None, say, ladder: list[int] | None = None, margin: float | None = None,
            screen: dict | None = None) -> tuple[int, bool]:
    """`plan`, by a command that may have just created the study: (items added, whether this command
    made the grid). A refused plan leaves no study behind (its name would wait for a plan that never
    comes), and an empty study that a refused command of an older version left is planned as new."""
    fresh = created or PLAN not in study.user_attrs
    try:
        return plan(study, cfg, axes, seeds, halfwidth, max_seeds, say=say, ladder=ladder, margin=margin,
                    screen=screen), fresh
    except BaseException:
        if fresh:
            optuna.delete_study(study_name=study.study_name, storage=optuna_storage.storage_of(study)[0])
        raise


def outcomes(study: optuna.Study) -> tuple[dict[str, dict[int, float]], list[int]]:
    """(cell -> seed -> the finished item's value, every seed an item of the grid ever held): what a
    confirmation reads of a screen, stored in the screen's exported grid.json too."""
    values: dict[str, dict[int, float]] = {}
    for (label, seed), trials in items_of(study).items():
        done = [t for t in trials if t.state == COMPLETE]
        if done:
            values.setdefault(label, {})[seed] = done[0].value
    used = sorted({int(t.user_attrs["seed"]) for t in study.get_trials(deepcopy=False) if "seed" in t.user_attrs})
    return values, used


def screened(screen: optuna.Study, top: int) -> tuple[Config, list[tuple[str, list[str]]], int, dict]:
    """A confirmation of a screening grid (`chosen`, from its study)."""
    if PLAN not in screen.user_attrs:
        plan_of(screen)  # says it is not a grid
    return chosen(screen.study_name, screen.user_attrs[PLAN], *outcomes(screen), top)


def screened_export(path: str, top: int) -> tuple[Config, list[tuple[str, list[str]]], int, dict]:
    """A confirmation of a screening grid from its exported grid.json (its storage may be gone: a screen
    run in one session, its export committed, confirmed in the next)."""
    try:
        saved = json.loads(Path(path).read_text())
        held, values, used = saved["plan"], saved["outcomes"], saved["seeds_used"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarnessError(f"--confirm {path}: not a grid.json exported by this version (with its plan and "
                           f"outcomes): {type(e).__name__} {e}") from None
    return chosen(saved.get("study", path), held, {c: {int(s): v for s, v in d.items()} for c, d in values.items()},
                  used, top)


def chosen(name: str, held: dict, values: dict[str, dict[int, float]], used: list[int],
           top: int) -> tuple[Config, list[tuple[str, list[str]]], int, dict]:
    """A confirmation of screen `name` (its plan `held`, its finished items' `values`, every seed it
    `used`): (its base config, one joint axis holding the `top` cells with the largest mean images'
    effect over the screening seeds, the first seed no screening item used, what was screened for the
    report). Ladder rungs price cells and are never candidates; every cell must have finished its
    screening seeds, so that the ranking is over all of them."""
    cfg = config.apply(Config(), held["config"])
    seeds = held["seeds"]
    means, missing = {}, []
    for cell in cells(cfg, [tuple(a) for a in held["axes"]], held.get("ladder", ())):
        if cell.rung is not None:
            continue
        done = [values[cell.label][s] for s in seeds if s in values.get(cell.label, {})]
        if len(done) < len(seeds):
            missing.append(cell.label)
        else:
            means[cell.label] = sum(done) / len(done)
    if missing:
        raise HarnessError(f"--confirm {name}: {len(missing)} screened cell(s) have not finished their "
                           f"{len(seeds)} seeds (the first: {missing[0]}); finish the screen (`harness worker --study "
                           f"{name}`), then confirm")
    if not 1 <= top <= len(means):
        raise HarnessError(f"--top {top}: the screen {name!r} has {len(means)} cells to choose from; "
                           f"give 1 to {len(means)}")
    best = sorted(means, key=means.get, reverse=True)[:top]
    axes = [tuple(a) for a in held["axes"]]
    keys = axis_keys(axes)
    # Each cell's values as the screen's axes spelled them, by its label (as `cells` makes it).
    spelled = {}
    for values in itertools.product(*(v for _, v in axes)):
        updates = _updates(zip((k for k, _ in axes), values))
        spelled[" ".join(f"{k}={v}" for k, v in updates.items())] = JOIN.join(updates[k] for k in keys)
    axis = [(JOIN.join(keys), [spelled[label] for label in best])] if keys else []
    # Every seed a screening item ever held, grown ones included: the confirmation starts past all of them.
    info = {"study": name, "seeds": sorted(set(used)), "top": top, "chosen": best,
            "ladder": held.get("ladder", []), "screened_seeds": seeds,
            "means": {label: round(100 * m, 4) for label, m in sorted(means.items(), key=lambda kv: -kv[1])}}
    return cfg, axis, max(used) + 1, info


def plan(study: optuna.Study, cfg: Config, axes, seeds: list[int], halfwidth: float | None = None,
         max_seeds: int | None = None, say=None, ladder: list[int] | None = None, margin: float | None = None,
         screen: dict | None = None) -> int:
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
    screen = screen or (held or {}).get("screen")
    if screen is not None and set(all_seeds) & set(screen["seeds"]):
        raise HarnessError(f"a confirmation never reuses a screening seed: seeds {sorted(set(all_seeds) & set(screen['seeds']))} "
                           f"ran in the screen {screen['study']!r}")
    study.set_user_attr(PLAN, {"config": flat, "axes": merged, "seeds": all_seeds, "halfwidth": halfwidth,
                               "max_seeds": max_seeds, "generators": k, "ladder": ladder, "margin": margin,
                               **({"screen": screen} if screen is not None else {})})
    have = {(t.user_attrs.get("cell"), t.user_attrs.get("seed")) for t in study.get_trials(deepcopy=False)
            if t.state != FAIL}
    added = 0
    for cell in cells(cfg, merged, ladder):
        for seed in all_seeds:
            if (cell.label, seed) not in have:
                study.enqueue_trial({}, user_attrs={"cell": cell.label, "seed": seed})
                added += 1
    return added


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
    return optuna_storage.open_study(name, storage, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(),
                              create=create)
