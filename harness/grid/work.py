"""A grid's workers: each claims a (cell, seed) item (Optuna's atomic WAITING -> RUNNING switch), keeps
its trial's heartbeat while the item's pipeline runs under the grid's MLflow run, and reports when
the last item is done."""
from __future__ import annotations

import functools
import threading

import optuna

from harness import config, generators, optuna_storage, pipeline, precision, preflight
from harness.analysis import stats
from harness.config import Config
from harness.context import Context
from harness.errors import HarnessError
from harness.grid.plan import COMPLETE, FAIL, PLAN, PRUNED, RUNNING, WAITING, items_of, extend, generators_of, plan_of
from harness.grid.plan import slots as plan_slots
from harness.grid.report import report
from harness.grid.views import save_views
from harness.phases import compare, pretrain
from harness.tracking import liveness


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


def claim_item(study: optuna.Study, slots_of=None):
    """A WAITING item switched to RUNNING by this worker (atomic in the storage), or None. With
    `slots_of(cell, seed)` (plan.slots): first the items that share the fewest runs with the items other
    workers hold (a generator, a baseline another worker may be computing), in queue order among equals."""
    storage, study_id = optuna_storage.storage_of(study)
    waiting = study.get_trials(deepcopy=False, states=(WAITING,))
    wanted: dict[int, tuple] = {}
    if slots_of is not None and waiting:
        busy = {s for t in study.get_trials(deepcopy=False, states=(RUNNING,)) for s in t.user_attrs.get("slots", ())}
        wanted = {t.number: slots_of(t.user_attrs["cell"], int(t.user_attrs["seed"])) for t in waiting}
        waiting = sorted(waiting, key=lambda t: len(busy.intersection(wanted[t.number])))  # stable: queue order
    for t in waiting:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if storage.set_trial_state_values(trial_id, RUNNING):
            cell, seed = t.user_attrs["cell"], int(t.user_attrs["seed"])
            if wanted:
                storage.set_trial_user_attr(trial_id, "slots", list(wanted[t.number]))
            if items_of(study)[(cell, seed)][0].number != t.number:
                # Two workers extended the grid at once and enqueued the same seed twice: the oldest
                # trial of a (cell, seed) is the item, this one steps aside.
                storage.set_trial_user_attr(trial_id, "duplicate", True)
                storage.set_trial_state_values(trial_id, PRUNED)
                continue
            return trial_id, cell, seed
    return None


def _grid_run(ctx: Context, study: optuna.Study, created: bool, cfg: Config):
    save_views(ctx.store, study)
    return optuna_storage.study_run(ctx, study, created, {**config.flat(cfg), "grid.study": study.study_name},
                             f"grid {study.study_name}", {"harness.preset": cfg.preset}, phase="grid")


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
    storage, _ = optuna_storage.storage_of(study)
    k = study.user_attrs[PLAN].get("generators") or generators_of(cfg, seeds)
    n_items = len(grid_cells) * len(seeds)
    ctx.store.say(f"grid {study.study_name!r}: {len(grid_cells)} cells x {len(seeds)} seeds = {n_items} items; "
                  f"minimum detectable effect at 80% power with {len(seeds)} seeds: {stats.mde(len(seeds)):.2f} "
                  "points (paired-delta SD 1.5)")
    checked: set[str] = set()

    @functools.lru_cache(maxsize=None)
    def slots_of(label: str, seed: int) -> tuple[str, ...]:
        return plan_slots(by_label[label], seed, seeds[0], k) if label in by_label else ()
    with _grid_run(ctx, study, created, cfg) as parent:
        while True:
            optuna_storage.fail_stale(study)
            item = claim_item(study, slots_of)
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
                    # The plan keeps `auto` precisions: each worker runs what its own machine has. A
                    # worker checks a cell once on its own machine (its data, weights and network may differ
                    # from the planner's), and the generator against each seed's draw.
                    local = precision.resolve_config(pretrain.with_classes(cell.cfg, ctx.data_dir), ctx.device)
                    if label not in checked:
                        preflight.kinds(local)
                        preflight.inputs(ctx, local)
                        checked.add(label)
                    scfg = pipeline.seeded(local, seed)
                    preflight.generator(ctx, scfg)
                    trains = generators.get(cell.cfg.generator.kind).TRAINS
                    # This seed's generator, trained on that seed's data draw: one of the K of the plan's first
                    # seeds (a confirmation's start past the screen's: its generators are new too).
                    own = seeds[0] + (seed - seeds[0]) % k
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
