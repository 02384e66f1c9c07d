"""Optuna study over the augmentation knobs: a thin adapter that maps `trial.suggest_*` onto config
fields and runs the normal phases.

    harness sweep --trials 20 --preset cpu [--study NAME] [--storage URL] [--spec harness/experiments/sweep.toml]

- Objective: the images' effect on validation: the synthetic arm's validation accuracy (last epoch) minus
  that of its control (the same recipe and slot count with the real training images in the slot;
  harness/phases/control.py), so that a knob that only adds steps or images of any kind cannot win.
  Controls are cached like any phase: trials that ask for the same slot share one. With
  control.enabled=false, the synthetic arm's validation accuracy alone (recipe not controlled). Trials never
  see the test set; the best trial's models are evaluated once on it at the end.
- Reuse: baseline and generator are trained once per study (a GAN to gan.epochs; its checkpoints
  serve the smaller epoch counts); a trial generates and labels only the images no earlier trial of
  the process did (sample counts are prefixes of one stream per checkpoint), and the synthetic arm's
  training is cached by its kept images, so a trial pays only for what its parameters change. `--no-cache`
  retrains every phase in every trial.
- Pruning: the synthetic arm's training reports validation accuracy per epoch; the pruner stops hopeless trials.
- Storage: any Optuna RDB URL; several workers share one study; heartbeats fail a killed worker's
  trial, which is then retried. Rerunning the command resumes the study up to --trials.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow
import optuna

from harness import config, generators, optuna_storage, preflight
from harness.analysis import page, plateau, render
from harness.analysis.stats import MARGIN
from harness.config import Config
from harness.context import Context
from harness.errors import HarnessError, mask
from harness.phases import pretrain
from harness.runner import Runner
from harness.sweep.space import Spec, suggest
from harness.tracking import codecs, store

TRIAL_PHASES = ("generate", "pseudolabel", "control", "synthetic")  # what a trial runs (the control where it is
# enabled); the phases before are the study's
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SURPLUS = "harness.surplus"  # trial user attr: started after the study was full (two workers asked at once)


# ---------------------------------------------------------------------------------------------
# Study

def open_study(name: str, storage: str, spec: Spec, sampler_seed: int) -> tuple[optuna.Study, bool]:
    """The study with the spec's sampler and pruner, and whether this call created it."""
    # Optuna 5 changed the TPE defaults: every choice is spelled out so results do not move with versions.
    if spec.sampler == "gp":
        sampler = optuna.samplers.GPSampler(seed=sampler_seed, n_startup_trials=spec.n_startup_trials,
                                            deterministic_objective=False)
    elif spec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=spec.n_startup_trials,
                                             multivariate=True, group=False, constant_liar=True)
    if spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                             n_warmup_steps=spec.pruner_warmup_epochs)
    elif spec.pruner == "threshold":
        pruner = optuna.pruners.ThresholdPruner(lower=spec.pruner_lower, n_warmup_steps=spec.pruner_warmup_epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna_storage.open_study(name, storage, sampler, pruner)


MAX_FAILED_IN_A_ROW = 5  # trials that fail one after another: a setting is wrong, not a trial unlucky


def check(ctx: Context, cfg: Config, spec: Spec) -> None:
    """What a sweep of this config and spec needs, beyond the command's preflight of the config itself:
    every end of every range and every choice against this config (the preset's, not the defaults), its
    settings first, then against the data (an oracle's pool, a folder's count), so that a range no trial
    can run fails once, before any run opens, not once per trial."""
    for p, value in _extremes(spec):
        try:
            preflight.kinds(config.apply(cfg, {p.field: value}))
        except HarnessError as e:
            raise HarnessError(f"sweep spec: {p.field} = {value!r} does not fit preset {cfg.preset!r}: {e}") from None
    if not cfg.data.val_per_class:
        raise HarnessError("a sweep chooses by validation accuracy: data.val_per_class must be > 0, got 0")
    if any(p.kind == "checkpoint" for p in spec.params) and not generators.get(cfg.generator.kind).TRAINS:
        raise HarnessError(f"the sweep spec chooses a checkpoint, but generator.kind={cfg.generator.kind} does not "
                           "train; drop the checkpoint parameter from the spec")
    preflight.generator(ctx, cfg)
    for p, value in _extremes(spec):
        try:
            one = pretrain.with_classes(config.apply(cfg, {p.field: value}), ctx.data_dir)
            preflight.generator(ctx, one)
            pretrain.check_data(ctx, one)
        except HarnessError as e:
            raise HarnessError(f"sweep spec: {p.field} = {value!r} cannot run on this data: {e}") from None


def _extremes(spec: Spec):
    """(param, value) for both ends of each range and each choice: what the trials may ask for."""
    for p in spec.params:
        if p.kind in ("int", "float"):
            for end in (p.low, p.high):
                yield p, int(end) if p.kind == "int" else end
        elif p.kind == "categorical":
            for c in p.choices:
                yield p, c


@dataclass
class SweepResult:
    run_id: str
    study: optuna.Study
    best_params: dict
    best_value: float
    best_test: dict
    baseline: dict
    table_md: str
    words: str = ""  # the best trial's result in words, the images' effect first


def run(ctx: Context, cfg: Config, spec: Spec, n_trials: int, study_name: str, storage: str,
        sampler_seed: int = 0) -> SweepResult:
    """The study's trials (the command's preflight and `check` come first)."""
    study, created = open_study(study_name, storage, spec, sampler_seed)
    _claim(study, study_name, cfg, ctx)
    fields = {p.field for p in spec.params}
    kind = generators.get(cfg.generator.kind)
    with optuna_storage.study_run(ctx, study, created, {**config.flat(cfg), "sweep.study": study_name,
                                          "sweep.space": ",".join(sorted(fields))},
                    f"sweep {study_name}", {"harness.preset": cfg.preset,
                                            "harness.optuna_storage": mask(storage)}) as parent:  # never the password
        # Trained once per study; ctx.use_cache still governs whether an earlier identical run serves.
        shared = _upstream(ctx, cfg)
        checkpoints = list(kind.checkpoints(shared["generator"].source_run_id)) if kind.TRAINS else []

        def objective(trial: optuna.Trial) -> float:
            ahead = [t for t in _counted(study, running=True) if t.number < trial.number]
            if len(ahead) >= n_trials:
                # Another worker asked at the same moment for the last free trial. Optuna cannot take a
                # trial back: it ends PRUNED, marked surplus, and counts for nothing.
                trial.set_user_attr(SURPLUS, True)
                raise optuna.TrialPruned("surplus: the study already has its trials")
            values = {p.field: suggest(trial, p, checkpoints) for p in spec.params}
            ran.append(trial.number)
            try:
                value = _one(trial, values)
            except HarnessError as e:
                failed.append(f"trial {trial.number} ({json.dumps(values)}): {e}")
                trial.set_user_attr("error", str(e)[:500])  # why, for whoever reads the study (as a grid item's)
                raise
            except optuna.TrialPruned:
                failed.clear()
                raise
            failed.clear()  # a trial that did not fail ends the streak
            return value

        def _one(trial: optuna.Trial, values: dict) -> float:
            tcfg = pretrain.with_classes(config.apply(cfg, values), ctx.data_dir)
            with store.phase_run(ctx.store, "trial", {**{k: str(v) for k, v in values.items()},
                                                      "trial.number": trial.number, "sweep.study": study_name},
                                 run_name=f"sweep trial {trial.number}",
                                 tags={"harness.trial": trial.number, "harness.study": study_name}) as tr:
                trial.set_user_attr("mlflow_run_id", tr.run_id)
                value, what = _trial(ctx, trial, tcfg, shared if ctx.use_cache else _upstream(ctx, tcfg))
                store.log_batch(client=ctx.store.client, metrics={"trial/value": value}, tags={
                    store.NOTE: f"**sweep trial {trial.number}**: {json.dumps(values)}: {what} -> "
                                + (f"the images' effect on validation accuracy {100 * value:+.2f} points (synthetic "
                                   "minus control)." if tcfg.control.enabled else
                                   f"validation accuracy {100 * value:.2f}% (recipe not controlled).")})
            return value

        failed: list[str] = []  # this worker's trials that failed one after another, with why
        ran: list[int] = []  # the number of the trial this worker runs now
        _enqueue_reference(study, spec, cfg, checkpoints)
        _work(ctx, study, objective, n_trials, failed, ran)
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            raise HarnessError(f"study {study_name!r} has no completed trial (all pruned or failed)")
        best, syn, table_md, words = _test_best(ctx, cfg, study, study_name, shared)
        plots = _log_plots(study, ctx.store.say)
        page.log(f"Sweep {study_name}: the best trial's images", f"Best trial {best.number} {json.dumps(best.params)}: "
                 f"{words}.\n\n{table_md}", [(f"{path} (Optuna)", data) for path, data in plots.items()])
    return SweepResult(parent.run_id, study, best.params, best.value, syn.metrics, shared["baseline"].metrics, table_md,
                       words)


def _counted(study: optuna.Study, running: bool = False) -> list:
    """The trials that count towards --trials: finished ones (surplus starts aside), and with `running`
    those another worker holds now."""
    states = FINISHED + ((optuna.trial.TrialState.RUNNING,) if running else ())
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(SURPLUS)]


def _work(ctx: Context, study: optuna.Study, objective, n_trials: int, failed: list[str], ran: list[int]) -> None:
    """Run trials until the study holds n_trials finished ones. When the trials left are all held by
    other workers, wait: one of them may have died, and then its trial is failed once its heartbeat is
    stale and retried (a WAITING copy), here or by another worker. A trial that fails (a diverged
    classifier, too few images for its sample count) ends FAILED on both sides, with one line; the study
    goes on, until MAX_FAILED_IN_A_ROW trials of this worker failed one after another: then a setting
    is wrong for every trial, and the sweep stops with the error they share."""
    waiting = (optuna.trial.TrialState.WAITING,)
    while True:
        optuna_storage.fail_stale(study)
        done, held = len(_counted(study)), len(_counted(study, running=True))
        if done >= n_trials:
            return
        if held >= n_trials and not study.get_trials(deepcopy=False, states=waiting):
            ctx.store.pause()
            continue
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is our one line, not Optuna's traceback
        ran.clear()  # the objective notes this call's trial
        try:
            study.optimize(objective, n_trials=1, catch=(HarnessError,))
        except Exception:
            if not (ran and _taken_over(study, ran[-1])):
                raise
            # A loaded machine delayed this worker's heartbeat past the grace period: a peer failed the
            # trial as dead and queued a copy, and Optuna cannot record this worker's result on it.
            ctx.store.say(f"sweep trial {ran[-1]}: another worker took it over (this worker's heartbeat came late); "
                          "its copy reuses the phases finished here")
        finally:
            optuna.logging.set_verbosity(level)
        if failed:
            ctx.store.say(f"sweep {failed[-1]}")
        if len(failed) >= MAX_FAILED_IN_A_ROW:
            raise HarnessError(f"{len(failed)} sweep trials failed in a row, the last: {failed[-1]}; stopping the sweep "
                               "(fix the setting, then rerun: the study continues)")


def _taken_over(study: optuna.Study, number: int) -> bool:
    """Whether trial `number` was failed by a peer that took it for dead (its retry copy names it)."""
    trials = study.get_trials(deepcopy=False)
    return any(t.number == number and t.state == optuna.trial.TrialState.FAIL for t in trials) and \
        any(number in optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) for t in trials)


def _test_best(ctx: Context, cfg: Config, study: optuna.Study, study_name: str, shared: dict):
    """The best trial, evaluated once on the test set and compared with the baseline, on the sweep run."""
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial
    best_cfg = config.apply(cfg, best.params)
    base = shared["baseline"]
    # The trial's own models, not retrained copies: the ones that were chosen are the ones tested.
    options = {}
    for phase in TRIAL_PHASES[2:]:
        model_run = best.user_attrs.get(f"{phase}_run_id")
        options[phase] = dict(key_suffix=f"-model:{model_run}", compute_options={"model_run": model_run},
                              params={"sweep.best_trial": best.number, f"{phase}.model_run": model_run})
    done = Runner(ctx).walk(best_cfg, have=shared, stop=TRIAL_PHASES[-1], run_options=options)
    syn, control = done[TRIAL_PHASES[-1]], done.get("control")
    rows = render.rows(base.metrics, syn.metrics, cfg.data.classes)
    deltas = render.delta_metrics(rows)
    if control is not None:
        table_md = render.arms_markdown(base.metrics, control.metrics, syn.metrics, cfg.data.classes)
        deltas = render.effects(base.metrics, control.metrics, syn.metrics, cfg.data.classes)
        what = (f"the images' effect on validation {100 * best.value:+.2f} points; on test "
                f"{100 * deltas['images/accuracy']:+.2f} points (synthetic {100 * syn.metrics['test/accuracy']:.2f}% - "
                f"control {100 * control.metrics['test/accuracy']:.2f}%; baseline {100 * base.metrics['test/accuracy']:.2f}%)")
        what = " ".join([what, *render.recipe_line(deltas["recipe/accuracy"], MARGIN)]).rstrip(".")
    else:
        table_md = f"{render.NOT_CONTROLLED[0].upper()}{render.NOT_CONTROLLED[1:]}.\n\n" + render.markdown(rows)
        what = (f"validation {100 * best.value:.2f}%, test {100 * syn.metrics['test/accuracy']:.2f}% vs baseline "
                f"{100 * base.metrics['test/accuracy']:.2f}% (recipe not controlled)")
    if not int(best.user_attrs.get("kept", 1)):
        what += ("; this trial kept no synthetic image, so its synthetic arm is the baseline's training: "
                 "no setting of the space made the images pay")
    # Every trial is read against the sweep's config's baseline: its budget is the one to report.
    budget = plateau.line(config.flat(cfg))
    if budget:
        what += f". {budget}".rstrip(".")
    mlflow.log_metrics({"best/value": best.value, "best/test_accuracy": syn.metrics["test/accuracy"],
                        **({"best/val_accuracy": syn.metrics["val/accuracy"]} if "val/accuracy" in syn.metrics else {}),
                        "baseline/test_accuracy": base.metrics["test/accuracy"],
                        "baseline/val_accuracy": base.metrics.get("val/accuracy", float("nan")),
                        **{k: v for k, v in deltas.items() if k.split("/", 1)[1] in ("accuracy", "f1_weighted")},
                        **({"control/test_accuracy": control.metrics["test/accuracy"]} if control is not None else {}),
                        "sweep/trials_complete": len(completed),
                        "sweep/trials_pruned": len(study.get_trials(deepcopy=False,
                                                                    states=(optuna.trial.TrialState.PRUNED,)))})
    mlflow.log_text(table_md, "comparison.md")
    codecs.log_json({"trial": best.number, "value": best.value, "params": best.params,
                     "objective": "images" if control is not None else "synthetic validation accuracy",
                     "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}, "best_params.json")
    store.describe(f"**sweep** `{study_name}`: {len(completed)} complete trials. Best trial {best.number} "
                   f"{json.dumps(best.params)}: {what}.\n\n{table_md}")
    return best, syn, table_md, what


def _claim(study: optuna.Study, name: str, cfg: Config, ctx: Context) -> None:
    """A study holds the trials of one config and one data set: resuming it with others would count
    their trials as this sweep's and test a model trained on other images."""
    splits = ctx.splits(cfg.data)
    key = f"{config.config_hash(cfg)}|{splits.digest('train', 'val', 'test')}"
    held = study.user_attrs.get("harness.key")
    if held is None:
        study.set_user_attr("harness.key", key)
    elif held != key:
        raise HarnessError(f"study {name!r} in this storage holds trials of another config or data set; resume it "
                           "with the same preset, --set values and data, or give a new --study name")


def _enqueue_reference(study: optuna.Study, spec: Spec, cfg: Config, checkpoints: list[int]) -> None:
    """A new study's first trial is the preset's own values, where the space holds them: the
    reference point every other trial is read against."""
    if study.get_trials(deepcopy=False):
        return
    values = {}
    for p in spec.params:
        value = config.flat_values(cfg)[p.field]
        if p.kind == "checkpoint":
            value = value or (max(checkpoints) if checkpoints else None)  # 0: the last checkpoint
            ok = value in checkpoints
        elif p.kind == "categorical":
            ok = value in p.choices
        else:
            ok = p.low <= value <= p.high
        if not ok:
            return
        values[p.field] = value
    study.enqueue_trial(values, skip_if_exists=True)


def _upstream(ctx: Context, cfg: Config) -> dict:
    """What every trial reads (evaluator, baseline, the generator that trains): the phases before a trial's."""
    return Runner(ctx).walk(cfg, stop_before=TRIAL_PHASES[0])


def _trial(ctx: Context, trial: optuna.Trial, tcfg: Config, shared: dict) -> tuple[float, str]:
    """One trial, under its run.

    Generating and pseudo-labelling run in memory (the runner's `inline`), their metrics on the
    trial's run: every trial's images are a prefix of one stream per checkpoint, so runs with arrays
    per trial would only repeat the generator run. The best trial's images are logged in full when
    it is evaluated. The synthetic arm's model is a child run holding its weights. Returns
    (validation accuracy, a line for the description)."""
    control_curve: dict[int, float] = {}  # epoch -> the control's validation accuracy

    def report(epoch: int, row: dict) -> None:
        if "val/accuracy" not in row:  # classifier.steps validates every few epochs
            return
        # The pruner compares trials epoch by epoch on what the objective measures: beyond the control.
        value = row["val/accuracy"] - control_curve.get(epoch, 0.0)
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {'beyond the control ' if control_curve else ''}{value:+.4f} "
                                     f"at epoch {epoch}")

    def controlled(epoch: int, row: dict) -> None:
        if "val/accuracy" in row:
            control_curve[epoch] = row["val/accuracy"]

    # Validation only: a distinct cache key, since such a run has no test artifacts. The control is never
    # pruned: other trials of its slot reuse it.
    val_only = dict(key_suffix="-val", brief=True)
    runner = Runner(ctx)
    done = runner.walk(tcfg, have=shared, stop="control", inline=TRIAL_PHASES[:2], run_options={
        "control": dict(**val_only, compute_options={"on_epoch": controlled, "evaluate_test": False})})
    control = done.get("control")
    if control is not None and control.reused:  # an earlier trial's control of the same slot: its curve
        control_curve.update({m.step: m.value for m in
                              ctx.store.client.get_metric_history(control.source_run_id, "val/accuracy")})
    done = runner.walk(tcfg, have=done, stop="synthetic", run_options={
        "synthetic": dict(**val_only, compute_options={"on_epoch": report, "evaluate_test": False})})
    gen, kept, syn = done["generate"], done["pseudolabel"], done["synthetic"]
    n_kept = int(kept.metrics["kept/count"])
    trial.set_user_attr("kept", n_kept)
    for phase, result in (("synthetic", syn), ("control", control)):
        if result is not None:  # the models the best trial is tested with
            trial.set_user_attr(f"{phase}_run_id", result.source_run_id)
    what = f"{len(gen.images)} images from {gen.drawn_from}, kept {n_kept} (synthetic run `{syn.source_run_id}`)"
    if not n_kept:
        what += ": no image kept, so the synthetic arm is the baseline's training"
        mlflow.set_tag("harness.kept_none", "true")
    if control is None:
        return syn.metrics["val/accuracy"], what
    return syn.metrics["val/accuracy"] - control.metrics["val/accuracy"], \
        what + f", control run `{control.source_run_id}`"


def _log_plots(study: optuna.Study, say) -> dict[str, bytes]:
    """Optuna's plots of the study, logged; returned as PNGs for the report page."""
    import warnings

    # No matplotlib.use("Agg"): a process-wide switch left behind for whoever imported us. pyplot
    # picks Agg by itself where there is no display, and each figure is closed once logged.
    from optuna.visualization import matplotlib as ovm
    plots = {"optuna/optimization_history.png": ovm.plot_optimization_history,
             "optuna/slice.png": ovm.plot_slice, "optuna/intermediate_values.png": ovm.plot_intermediate_values,
             "optuna/timeline.png": ovm.plot_timeline}
    if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
        plots["optuna/param_importances.png"] = ovm.plot_param_importances
    drawn = {}
    for path, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances with a constant objective
                say(f"sweep: skipped {path}: {e}")
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4))
        drawn[path] = page.png(fig)
        codecs.log_figure(fig, path)
    return drawn
