"""Optuna study over the augmentation knobs: a thin adapter that maps `trial.suggest_*` onto config
fields and runs the normal phases.

    harness sweep --trials 20 --preset cpu [--study NAME] [--storage URL] [--spec experiments/sweep.toml]

- Objective: validation accuracy of the augmented model (last epoch). Trials never see the test set;
  the best trial's model is evaluated once on it at the end and compared with the baseline.
- Reuse: baseline and GAN are trained once per study (the GAN to gan.epochs; its checkpoints serve
  the smaller epoch counts); a trial generates and labels only the images no earlier trial of the
  process did (sample counts are prefixes of one stream per checkpoint), and the augmented training
  is cached by its kept images, so a trial pays only for what its parameters change. `--no-cache`
  retrains every phase in every trial.
- Pruning: augmented training reports validation accuracy per epoch; the pruner stops hopeless trials.
- Storage: any Optuna RDB URL; several workers share one study; heartbeats fail a killed worker's
  trial, which is then retried. Rerunning the command resumes the study up to --trials.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import optuna
import torch

from harness import config, pipeline, tracking
from harness.config import Config
from harness.data import Splits
from harness.errors import HarnessError
from harness.phases import augment, baseline, compare as compare_phase, gan, generate, pseudolabel

DEFAULT_SPEC = config.EXPERIMENTS_DIR / "sweep.toml"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


# ---------------------------------------------------------------------------------------------
# The spec: search space, sampler and pruner, as data

@dataclass(frozen=True)
class Param:
    field: str  # config key, section.key
    kind: str  # int | float | categorical | checkpoint (a saved GAN epoch)
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


@dataclass(frozen=True)
class Spec:
    params: tuple[Param, ...]
    n_startup_trials: int = 5  # TPE's random trials before it models the space
    pruner: str = "median"  # median | threshold | none
    pruner_warmup_epochs: int = 2  # epochs a trial always gets before it can be pruned
    pruner_startup_trials: int = 3  # trials that finish before the median pruner acts
    pruner_lower: float = 0.0  # threshold pruner: prune when validation accuracy is below this


def load_spec(path: str | os.PathLike | None) -> Spec:
    path = Path(path) if path else DEFAULT_SPEC
    if not path.is_file():
        raise HarnessError(f"sweep spec {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"sweep spec {path} is not valid TOML: {e}") from None
    unknown = set(raw) - {"space", "sampler", "pruner"}
    if unknown:
        raise HarnessError(f"sweep spec {path}: unknown section(s) {', '.join(sorted(unknown))}; "
                           "expected [space.\"section.key\"], [sampler], [pruner]")
    valid = config.valid_keys()
    params = []
    for key, p in raw.get("space", {}).items():
        where = f"sweep spec {path}, space {key!r}"
        if key not in valid:
            raise HarnessError(f"{where}: unknown config field; valid fields: {', '.join(valid)}")
        kind = p.get("type")
        extra = set(p) - {"type", "low", "high", "log", "choices"}
        if extra:
            raise HarnessError(f"{where}: unknown option(s) {', '.join(sorted(extra))}")
        if kind == "checkpoint":
            if key != "generate.checkpoint_epoch":
                raise HarnessError(f"{where}: type checkpoint only fits generate.checkpoint_epoch")
            params.append(Param(key, kind))
        elif kind in ("int", "float"):
            low, high = p.get("low"), p.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise HarnessError(f"{where}: type {kind} needs numbers low and high")
            if not low < high:
                raise HarnessError(f"{where}: low ({low}) must be below high ({high})")
            if p.get("log") and low <= 0:
                raise HarnessError(f"{where}: a log range needs low > 0, got {low}")
            try:  # the range's ends must be valid values of the field
                config.apply(Config(), {key: int(low) if kind == "int" else low})
                config.apply(Config(), {key: int(high) if kind == "int" else high})
            except HarnessError as e:
                raise HarnessError(f"{where}: {e}") from None
            params.append(Param(key, kind, low, high, bool(p.get("log", False))))
        elif kind == "categorical":
            choices = p.get("choices")
            if not isinstance(choices, list) or not choices:
                raise HarnessError(f"{where}: type categorical needs a non-empty list choices")
            for c in choices:
                try:
                    config.apply(Config(), {key: c})
                except HarnessError as e:
                    raise HarnessError(f"{where}: {e}") from None
            params.append(Param(key, kind, choices=tuple(choices)))
        else:
            raise HarnessError(f"{where}: type must be int, float, categorical or checkpoint, got {kind!r}")
    if not params:
        raise HarnessError(f"sweep spec {path} declares no [space.\"section.key\"] parameters")
    sampler, pruner = raw.get("sampler", {}), raw.get("pruner", {})
    spec = Spec(tuple(params), n_startup_trials=sampler.get("n_startup_trials", 5),
                pruner=pruner.get("type", "median"), pruner_warmup_epochs=pruner.get("warmup_epochs", 2),
                pruner_startup_trials=pruner.get("startup_trials", 3), pruner_lower=pruner.get("lower", 0.0))
    if spec.pruner not in ("median", "threshold", "none"):
        raise HarnessError(f"sweep spec {path}: pruner type must be median, threshold or none, got {spec.pruner!r}")
    return spec


def suggest(trial: optuna.Trial, p: Param, checkpoints: list[int]):
    name = p.field
    if p.kind == "checkpoint":
        return trial.suggest_categorical(name, checkpoints)
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    if p.kind == "float":
        return trial.suggest_float(name, float(p.low), float(p.high), log=p.log)
    return trial.suggest_categorical(name, list(p.choices))


# ---------------------------------------------------------------------------------------------
# Study

def default_storage() -> str:
    """A SQLite file beside the tracking database (or in the working directory)."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).with_name('optuna.db')}"
    return "sqlite:///optuna.db"


def open_study(name: str, storage: str, spec: Spec, sampler_seed: int) -> optuna.Study:
    # Optuna 5 changed the TPE defaults: every choice is spelled out so results do not move with versions.
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=spec.n_startup_trials,
                                         multivariate=True, group=False, constant_liar=True)
    if spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                             n_warmup_steps=spec.pruner_warmup_epochs)
    elif spec.pruner == "threshold":
        pruner = optuna.pruners.ThresholdPruner(lower=spec.pruner_lower, n_warmup_steps=spec.pruner_warmup_epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    import time
    import warnings
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                rdb = optuna.storages.RDBStorage(
                    storage, heartbeat_interval=20, grace_period=60,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
            return optuna.create_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner,
                                       direction="maximize", load_if_exists=True)
        except Exception as e:
            # Workers starting together race to create a new storage's tables, its schema-version
            # row (UNIQUE alembic_version) or the study: the loser finds them made, and simply
            # opens them on the next try.
            racing = ("already exists", "UNIQUE constraint failed", "database is locked")
            if any(r in str(e) for r in racing) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            raise HarnessError(f"cannot open Optuna storage {storage!r}: {str(e).splitlines()[0]}") from None


class _Surplus(Exception):
    """A trial started after the study already had its --trials (another worker got there first)."""


@dataclass
class SweepResult:
    run_id: str
    study: optuna.Study
    best_params: dict
    best_value: float
    best_test: dict | None
    baseline: dict
    table_md: str


def run(cfg: Config, spec: Spec, n_trials: int, study_name: str, storage: str, splits: Splits, device: torch.device,
        use_cache: bool = True, sampler_seed: int = 0) -> SweepResult:
    study = open_study(study_name, storage, spec, sampler_seed)
    fields = {p.field for p in spec.params}
    with tracking.phase_run("sweep", cfg, run_name=f"sweep {study_name}",
                            extra_params={"sweep.study": study_name, "sweep.trials": n_trials,
                                          "sweep.space": ",".join(sorted(fields))}) as parent:
        mlflow.set_tag("harness.optuna_storage", storage)
        keys = {p: pipeline.phase_key(p, cfg) for p in ("baseline", "gan")}
        # Trained once per study; `use_cache` still governs whether an earlier identical run serves.
        base = baseline.run(cfg, splits, device, key=keys["baseline"], use_cache=use_cache)
        g = gan.run(cfg, splits, device, key=keys["gan"], use_cache=use_cache,
                    evaluator=pipeline.evaluator_for(cfg, splits, device, use_cache))
        checkpoints = list(gan.list_checkpoints(g.run_id))

        def objective(trial: optuna.Trial) -> float:
            ahead = [t for t in study.get_trials(deepcopy=False, states=FINISHED + (optuna.trial.TrialState.RUNNING,))
                     if t.number < trial.number]
            if len(ahead) >= n_trials:
                study.stop()
                raise _Surplus
            values = {p.field: suggest(trial, p, checkpoints) for p in spec.params}
            tcfg = config.apply(cfg, values)
            with tracking.phase_run("trial", tcfg, run_name=f"sweep trial {trial.number}",
                                    extra_params={"trial.number": trial.number, "sweep.study": study_name},
                                    tags={"harness.trial": trial.number, "harness.study": study_name}) as tr:
                trial.set_user_attr("mlflow_run_id", tr.run_id)
                value, what = _trial(trial, tcfg, splits, device, base.run_id if use_cache else None,
                                     g.run_id if use_cache else None, use_cache)
                tracking.log_batch(metrics={"trial/value": value}, tags={
                    tracking.NOTE: f"**sweep trial {trial.number}**: {json.dumps(values)}: {what} -> validation "
                                   f"accuracy {100 * value:.2f}%."})
            return value

        def stop_when_done(study, _trial):
            if len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
                study.stop()

        if len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study.optimize(objective, n_trials=None, callbacks=[stop_when_done], catch=(_Surplus,))
        best_test, table_md = None, ""
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            raise HarnessError(f"study {study_name!r} has no completed trial (all pruned or failed)")
        best = study.best_trial
        # The best trial, evaluated once on the test set and compared with the baseline.
        best_cfg = config.apply(cfg, best.params)
        fixed = {"gan": keys["gan"]}
        gen = generate.run(best_cfg, g.run_id, device, key=pipeline.phase_key("generate", best_cfg, fixed))
        pl = pseudolabel.run(best_cfg, base.run_id, gen.images, splits.classes, device,
                             key=pipeline.phase_key("pseudolabel", best_cfg, fixed), generated=gen.labels)
        aug_key = pipeline.phase_key("augmented", best_cfg, pipeline.kept_fixed(fixed, pl.images, pl.labels, pl.soft))
        extra = {"augmented.pseudolabel_run": pl.run_id, "sweep.best_trial": best.number}
        if best.user_attrs.get("augmented_run_id"):
            # The trial's own model, not a retrained copy: the one that was chosen is the one tested.
            aug = augment.evaluate(best_cfg, splits, best.user_attrs["augmented_run_id"], device, key=aug_key,
                                   extra_params=extra)
        else:  # a trial of an older study, whose model run was not recorded
            aug = augment.run(best_cfg, splits, pl.images, pl.labels, device, key=aug_key, extra_params=extra,
                              soft=pl.soft)
        cmp = compare_phase.run(best_cfg, base.metrics, aug.metrics, splits.classes, use_cache=False)
        best_test, table_md = aug.metrics, cmp.table_md
        mlflow.log_metrics({"best/val_accuracy": best.value, "best/test_accuracy": aug.metrics["test/accuracy"],
                            "baseline/test_accuracy": base.metrics["test/accuracy"],
                            "baseline/val_accuracy": base.metrics.get("val/accuracy", float("nan")),
                            "delta/accuracy": cmp.deltas["delta/accuracy"],
                            "sweep/trials_complete": len(completed),
                            "sweep/trials_pruned": len(study.get_trials(deepcopy=False,
                                                                        states=(optuna.trial.TrialState.PRUNED,)))})
        tracking.log_json({"trial": best.number, "value": best.value, "params": best.params,
                           "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}, "best_params.json")
        _log_plots(study)
        tracking.describe(f"**sweep** `{study_name}`: {len(completed)} complete trials. Best trial {best.number} "
                          f"{json.dumps(best.params)}: validation {100 * best.value:.2f}%, test "
                          f"{100 * aug.metrics['test/accuracy']:.2f}% vs baseline "
                          f"{100 * base.metrics['test/accuracy']:.2f}%.\n\n{table_md}")
    return SweepResult(parent.run_id, study, best.params, best.value, best_test, base.metrics, table_md)


def _trial(trial: optuna.Trial, tcfg: Config, splits: Splits, device: torch.device, base_run: str | None,
           gan_run: str | None, use_cache: bool) -> tuple[float, str]:
    """One trial, under its run; without the cache it retrains baseline and GAN first.

    Generating and pseudo-labelling log their metrics on the trial's run, not as phase runs with
    arrays: every trial's images are a prefix of one noise stream per checkpoint (train.noise), so
    storing them per trial would only repeat the GAN run's checkpoint (and cost 30 MB a trial).
    The best trial's images are logged in full when it is evaluated. The augmented model is a
    child run holding its weights. Returns (validation accuracy, a line for the description)."""
    if base_run is None:
        base_run = baseline.run(tcfg, splits, device, key=pipeline.phase_key("baseline", tcfg), use_cache=False).run_id
    if gan_run is None:
        gan_run = gan.run(tcfg, splits, device, key=pipeline.phase_key("gan", tcfg), use_cache=False).run_id
    images, generated, epoch = generate.draw(tcfg, gan_run, device)
    lab = pseudolabel.label(tcfg, base_run, images, splits.classes, device, generated)
    tracking.log_batch(params={"trial.gan_run": gan_run, "trial.baseline_run": base_run},
                       metrics={"generate/n_samples": len(images), "generate/checkpoint_epoch": epoch, **lab.metrics})

    def report(epoch: int, row: dict) -> None:
        trial.report(row["val/accuracy"], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {row['val/accuracy']:.4f} at epoch {epoch}")

    # Validation only: a distinct cache key, since such a run has no test artifacts.
    pinned = {"gan": f"run:{gan_run}", "baseline": f"run:{base_run}"} if not use_cache else {}
    key = pipeline.phase_key("augmented", tcfg, pipeline.kept_fixed(pinned, lab.images, lab.labels, lab.soft)) + "-val"
    aug = augment.run(tcfg, splits, lab.images, lab.labels, device, key=key, use_cache=use_cache, soft=lab.soft,
                      on_epoch=report, evaluate_test=False)
    trial.set_user_attr("augmented_run_id", aug.run_id)  # holds the model the best trial is tested with
    return aug.metrics["val/accuracy"], (f"{len(images)} images from the epoch-{epoch} generator, kept "
                                         f"{lab.metrics['kept/count']} (augmented run `{aug.run_id}`)")


def _log_plots(study: optuna.Study) -> None:
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm
    plots = {"optuna/optimization_history.png": ovm.plot_optimization_history,
             "optuna/slice.png": ovm.plot_slice}
    if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
        plots["optuna/param_importances.png"] = ovm.plot_param_importances
    for path, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances with a constant objective
                click.echo(f"sweep: skipped {path}: {e}", err=True)
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4))
        tracking.log_figure(fig, path)
