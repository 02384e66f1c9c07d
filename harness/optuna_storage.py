"""Optuna storages shared by workers: opening a study (and knowing who created it), failing the
trials of dead workers, and the study's one MLflow run that every worker nests its work under.
Sweeps and grids both stand on it."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import optuna

from harness.context import Context
from harness.errors import HarnessError, mask, scrub
from harness.tracking import liveness, store

PARENT = "harness.mlflow_run"  # study user attr: the one MLflow run every worker nests its trials under


def default_storage() -> str:
    """A SQLite file beside the tracking database (or in the working directory)."""
    uri = store.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).with_name('optuna.db')}"
    return "sqlite:///optuna.db"


def _engine_kwargs(storage: str) -> dict:
    """SQLite under parallel workers: wait for the lock instead of failing ("database is locked",
    optuna issue 4994, seen in heartbeat writes). A server database is what parallel workers want."""
    return {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}


def open_study(name: str, storage: str, sampler, pruner, create: bool = True) -> tuple[optuna.Study, bool]:
    """A study of an Optuna RDB storage shared by workers, and whether this call created it; with
    `create` off, a study that does not exist is a KeyError (a worker does not plan studies)."""
    def attempt():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
            # The harness's heartbeat period (HARNESS_HEARTBEAT_SECONDS), so that a trial and its
            # MLflow run are declared dead alike; a dead worker's trial is retried (twice at most).
            rdb = optuna.storages.RDBStorage(
                storage, heartbeat_interval=max(1, round(liveness.interval())),
                grace_period=max(2, round(liveness.grace())), engine_kwargs=_engine_kwargs(storage),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created": the harness says what matters
        try:
            if create:
                return optuna.create_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner,
                                           direction="maximize"), True
        except optuna.exceptions.DuplicatedStudyError:  # atomic in the database: one worker creates
            pass
        finally:
            optuna.logging.set_verbosity(level)  # Optuna's logging is the process's, not ours to keep
        return optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner), False

    try:
        # Workers starting together race to create a new storage's tables, its schema-version row
        # (UNIQUE alembic_version) or the study: the loser finds them made, and simply opens them on
        # the next try.
        return liveness.retrying(attempt, ("already exists", "UNIQUE constraint failed", "database is locked"),
                                 tries=5, pause=lambda n: 0.5 + n)
    except KeyError:
        raise
    except Exception as e:
        raise HarnessError(f"cannot open Optuna storage {mask(storage)!r}: "
                           f"{scrub(str(e).splitlines()[0], [storage])}") from None


def check_storage(storage: str) -> None:
    """Connect once to an Optuna storage URL, so that a bad one (a typo, a server that is not there) is
    the one line a command prints, before any other."""
    try:
        import sqlalchemy
        engine = sqlalchemy.create_engine(storage, **_engine_kwargs(storage))
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except Exception as e:
        raise HarnessError(f"cannot open Optuna storage {mask(storage)!r}: "
                           f"{scrub((str(e).strip().splitlines() or [type(e).__name__])[0], [storage])}") from None


def storage_of(study: optuna.Study) -> tuple[optuna.storages.BaseStorage, int]:
    """The study's storage and id: the one place the harness reads Optuna's private attributes. A
    grid claims an enqueued item, beats its heartbeat and ends it by trial id, which Optuna's public
    API (`study.ask()`, `optimize`'s own heartbeat) does not offer for trials popped by hand without
    making a new trial when none is waiting. tests/test_studies.py fails loudly if Optuna changes it."""
    return study._storage, study._study_id  # noqa: SLF001


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose worker's heartbeat is stale (each is then retried as a WAITING copy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def study_run(ctx: Context, study: optuna.Study, created: bool, params: dict, name: str, tags: dict,
              phase: str = "sweep"):
    """The study's one MLflow run: opened by the worker that created the study (its id kept in the
    study), joined by every other worker and by later reruns, so that all trials nest under one parent."""
    parent = study.user_attrs.get(PARENT)
    if parent is None and not created:  # the creator sets it right after creating the study
        ctx.store.say(f"{phase} {study.study_name!r}: waiting up to 60 s for its MLflow run, which the command "
                      "that created the study opens")
        parent = liveness.wait_until(lambda: study.user_attrs.get(PARENT), timeout=60, every=0.5)
    if parent is not None:
        try:
            alive = ctx.store.client.get_run(parent).info.lifecycle_stage == "active"
        except Exception:
            alive = False
        parent = parent if alive else None
    if parent is None:
        with store.phase_run(ctx.store, phase, params, run_name=name, tags=tags) as pr:
            study.set_user_attr(PARENT, pr.run_id)
            yield pr
    else:
        with store.phase_run(ctx.store, phase, {}, join=parent) as pr:
            yield pr
