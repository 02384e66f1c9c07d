"""The tracking store and phase runs: where runs go, the cache lookup by key, runs that always end
(FINISHED / KILLED / FAILED, never RUNNING), and batched logging (one call per phase, not per step:
each MLflow call costs ~10 ms on SQLite)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError, explain, mask, refused
from harness.tracking import liveness, provenance

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default since 3.x
NOTE = "mlflow.note.content"  # the run description the MLflow UI shows, in Markdown
CONFLICT = ("IntegrityError", "UniqueViolation", "duplicate key", "UNIQUE constraint")  # two writers, one row
STOPPED = "harness.stopped"  # the signal that ended a KILLED run, when it was SIGTERM


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@dataclass(frozen=True)
class Lookup:
    """Every run of this experiment with one cache key, newest first, from one search: the run to
    reuse, the ones computing it now and the interrupted ones a generator may continue all come from
    it, so that a phase asks the store once, not once per question (each an HTTP round trip on a
    team's server)."""
    key: str
    runs: tuple

    @property
    def finished(self):
        return next((r for r in self.runs if r.info.status == "FINISHED"), None)

    def interrupted(self, limit: int = 5) -> list:
        return [r for r in self.runs if r.info.status in ("KILLED", "FAILED")][:limit]

    def running(self) -> list:
        return sorted((r for r in self.runs if r.info.status == "RUNNING"), key=lambda r: r.info.start_time)


@dataclass
class Store:
    """One experiment of one tracking store: held by the caller, passed to whatever opens runs."""
    uri: str
    experiment_id: str
    client: MlflowClient
    heartbeat: liveness.Heartbeat | None = field(default=None, repr=False)
    # What the harness tells a person while it works (waiting, resuming, passing over a file): the
    # CLI's stderr, or whatever a library caller gives; nothing below the CLI prints by itself.
    say: Callable[[str], None] = field(default=liveness.stderr, repr=False)
    _tags: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.heartbeat is None:
            self.heartbeat = liveness.Heartbeat(self.client)

    def check_reachable(self) -> None:
        """Raise, in one line, once the heartbeat found the store gone: long loops call this each
        epoch, so that a dead server stops the command in a bounded time, not at the next log call."""
        if self.heartbeat.lost:
            raise HarnessError(f"the MLflow tracking store {mask(self.uri)} stopped answering ({self.heartbeat.lost}); "
                               "its runs stay RUNNING until it is back, then the next command marks them FAILED "
                               "and `--resume` continues from the last checkpoint")

    def provenance(self) -> dict[str, str]:
        # Once per store: a sweep opens hundreds of runs, and `git rev-parse` per run cost more than the run.
        if self._tags is None:
            self._tags = provenance.tags()
        return self._tags

    def lookup(self, key: str) -> Lookup:
        """The runs of this experiment that *computed* the phase with cache key `key` (reused runs
        carry `harness.cache_hit` instead), every status, newest first."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`harness.cache_key` = '{key}'",
                                       order_by=["attributes.start_time DESC"], max_results=50)
        return Lookup(key, tuple(runs))

    def find_finished(self, key: str):
        return self.lookup(key).finished

    def live(self, found: Lookup, besides: str | None = None) -> list:
        """The runs of a lookup computing its key now; dead ones are marked FAILED on the way."""
        return [r for r in found.running() if r.info.run_id != besides and not liveness.mark_if_dead(self.client, r)]

    def computing(self, key: str, besides: str | None = None) -> list:
        """The live runs computing the phase with cache key `key` now (other workers, other
        processes); dead ones are marked FAILED on the way."""
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.`harness.cache_key` = '{key}' and attributes.status = 'RUNNING'",
                                       order_by=["attributes.start_time ASC"], max_results=50)
        return [r for r in runs if r.info.run_id != besides and not liveness.mark_if_dead(self.client, r)]

    def wait_for_others(self, key: str, phase: str, found: Lookup | None = None) -> Lookup:
        """Wait while another live worker computes `key` (`found`: what a lookup just saw). A worker
        that dies meanwhile is marked FAILED (and a generator's next run resumes it); one that
        finishes is then reused. Returns the lookup that saw none computing."""
        said = False
        found = found or self.lookup(key)
        while found.finished is None and found.running():
            if not (live := self.live(found)):
                # Every run the lookup saw RUNNING was dead, and is now FAILED: look again, so that
                # the phase's `before` finds them among the interrupted runs (a generator continues).
                return self.lookup(key)
            if not said:
                who = live[0].data.tags.get(liveness.OWNER, "?").rsplit(":", 1)[0]
                self.say(f"{phase}: run {live[0].info.run_id} (process {who}) computes the same {phase}; "
                         "waiting for it, then reusing it")
                said = True
            self.pause()
            found = self.lookup(key)
        return found

    def pause(self) -> None:
        """One beat of every wait for other workers (a run they compute, items they hold): a store that
        stopped answering ends it in one line, else a sleep short enough to see a peer die."""
        self.check_reachable()
        time.sleep(min(2.0, liveness.interval()))

    def get_run(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except Exception:
            raise HarnessError(f"no run {run_id!r} in the tracking store {mask(self.uri)}") from None


def configure(experiment: str, say: Callable[[str], None] = liveness.stderr) -> Store:
    """Point MLflow at the tracking store, check it answers, and return the experiment's Store.

    Checked before any training starts, so an unreachable store costs seconds, not a lost run.
    """
    if not experiment.strip():
        raise HarnessError(f"--experiment must name an experiment, got {experiment!r}")
    if experiment != experiment.strip() or any(not c.isprintable() for c in experiment):
        # A newline or a tab would split every line that names the experiment; spaces at either end
        # make two experiments that print alike.
        raise HarnessError(f"--experiment must be one line of printable text without spaces at either end, "
                           f"got {experiment!r}")
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        where = Path(uri[len("sqlite:///"):].split("?")[0].removeprefix("file:")).expanduser()
        if where.is_dir():  # SQLite cannot open it, and MLflow retries for minutes before saying so
            raise HarnessError(f"the MLflow tracking store {mask(uri)} is a folder, not a database file; point "
                               f"MLFLOW_TRACKING_URI at a file in it, e.g. sqlite:///{where / 'mlflow.db'}")
    if uri.startswith(("http://", "https://")):
        # MLflow retries a dead server for minutes by default; fail fast and say so instead. A stopped
        # server refuses at once; the timeout bounds a silent one, and leaves a busy one (basic-auth
        # hashes a password per request; a checkpoint upload) 30 s: at 10 s a loaded 2-core machine
        # failed a live server's requests.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow.set_tracking_uri(uri)
    with _first_use_lock(uri):
        store = _open(uri, experiment)
    store.say = say
    _probe_write(store, experiment)
    liveness.reap(store.client, store.experiment_id, say)
    return store


def _probe_write(store: Store, experiment: str) -> None:
    """One small write before any work: a read-only store file (or a server that refuses writes)
    fails here in one line, not after a phase has trained for minutes."""
    import logging
    log = logging.getLogger("mlflow.store.db.utils")  # it logs a traceback before re-raising
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        # Workers opening the store together race to insert the same tag (PostgreSQL's "duplicate
        # key", SQLite's "UNIQUE constraint"): the loser's store is writable all the same.
        liveness.retrying(lambda: store.client.set_experiment_tag(store.experiment_id, "harness.last_opened",
                                                                  f"{time.time():.0f}"),
                          CONFLICT, tries=3, pause=lambda _: 0.2 + random.random())
    except Exception as e:
        raise HarnessError(refused(e, store.uri, experiment) or explain(e) or f"cannot write to the MLflow "
                           f"tracking store {mask(store.uri)} ({str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}); "
                           "check MLFLOW_TRACKING_URI") from None
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Processes that open a new SQLite store at the same moment race through MLflow's schema
    migration, and the loser can leave it half-migrated ("table _alembic_tmp_... already exists")
    for every later command. A file lock beside the store makes them take turns."""
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if path is not None and path.startswith("file:"):  # SQLite's URI form: file:/path/x.db?mode=ro
        path = path[len("file:"):].split("?")[0]
    if path is None or path == ":memory:":
        yield
        return
    import fcntl
    lock = Path(path).expanduser().with_name(Path(path).name + ".lock")
    try:
        handle = open(lock, "a")
    except OSError as e:
        raise HarnessError(f"cannot reach the MLflow tracking store {mask(uri)!r} ({lock.parent} is not a writable folder: "
                           f"{e.strerror}); check MLFLOW_TRACKING_URI") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open(uri: str, experiment: str) -> Store:
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates or migrates the store, under the lock
        if os.environ.get("MLFLOW_RUN_ID"):
            # Under `mlflow run`, the run it started becomes our top-level run, so we must log to
            # its experiment (choose it with `mlflow run --experiment-name`).
            exp_id = client.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
        else:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    # The UI opens classic-ML experiments in the runs table, not the GenAI view.
                    exp_id = client.create_experiment(experiment,
                                                      tags={"mlflow.experimentKind": "custom_model_development"})
                except Exception:
                    exp = client.get_experiment_by_name(experiment)  # another worker created it just now
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            elif exp.lifecycle_stage == "deleted":
                raise HarnessError(f"experiment {experiment!r} is deleted in {mask(uri)}; restore it or pick another --experiment")
            else:
                exp_id = exp.experiment_id
    except HarnessError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(refused(e, uri, experiment) or f"cannot reach the MLflow tracking store {mask(uri)!r} "
                           f"({first[:300]}); check MLFLOW_TRACKING_URI") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return Store(uri, exp_id, client)


def run_link(store: Store, run_id: str) -> str:
    """A link the MLflow UI follows from a run description (relative to the UI's own address)."""
    return f"[run {run_id}](#/experiments/{store.experiment_id}/runs/{run_id})"


def reused_note(store: Store, hit) -> str:
    return (f"**Reused** {run_link(store, hit.info.run_id)}: identical config, data, inputs and code. Its "
            f"artifacts and models are there; this run holds its metrics.\n\n{hit.data.tags.get(NOTE, '')}")


def lead_to(store: Store, hit) -> None:
    """A reused run shows where its outputs are: a one-line artifact with the source's link, and the
    source's logged models as this run's model inputs (the run page lists them)."""
    from mlflow.entities import LoggedModelInput
    mlflow.log_text(f"This phase reused {run_link(store, hit.info.run_id)}: its artifacts and models are there.\n",
                    "reused_from.md")
    outputs = store.client.get_run(hit.info.run_id).outputs  # search results may leave them out
    models = [m.model_id for m in outputs.model_outputs] if outputs else []
    if models:
        store.client.log_inputs(mlflow.active_run().info.run_id,
                                models=[LoggedModelInput(model_id=m) for m in models])


def describe(markdown: str) -> None:
    """The active run's description: what the phase did and its headline figures."""
    mlflow.set_tag(NOTE, markdown)


@dataclass
class PhaseRun:
    run: mlflow.ActiveRun

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def start(store: Store, phase: str, tags: dict | None = None, run_name: str | None = None,
          system_metrics: bool = False) -> mlflow.ActiveRun:
    """A new run of `phase`, nested under the active run if there is one, with who runs it and a first
    heartbeat in its tags. End it with `running` (or `step_back`)."""
    all_tags = {"harness.phase": phase, **store.provenance(), liveness.OWNER: liveness.owner(),
                liveness.HEARTBEAT: f"{time.time():.0f}", **(tags or {})}
    return mlflow.start_run(run_name=run_name or phase, nested=mlflow.active_run() is not None,
                            tags={k: str(v) for k, v in all_tags.items()}, log_system_metrics=system_metrics)


def step_back(store: Store, run: mlflow.ActiveRun) -> None:
    """Withdraw a run that announced a key another worker announced at the same moment: ended and
    deleted, so that nothing of it stays in the store."""
    mlflow.end_run("KILLED")
    store.client.delete_run(run.info.run_id)


@contextlib.contextmanager
def running(store: Store, run: mlflow.ActiveRun, params: dict | None = None, metrics: dict | None = None,
            tags: dict | None = None):
    """A started run until it ends: FINISHED on success, KILLED on Ctrl-C / SIGTERM / a pruning
    decision and FAILED on any other error, never left RUNNING; its heartbeat beats meanwhile.
    `params`, `metrics` and `tags` are written first, in one call (every MLflow call is a SQLite
    transaction, and a sweep opens runs every trial)."""
    store.heartbeat.add(run.info.run_id)
    try:
        if params or metrics or tags:
            log_batch(params=params, metrics=metrics, tags=tags, run_id=run.info.run_id, client=store.client)
        yield PhaseRun(run)
    except BaseException as e:
        # Ctrl-C, SIGTERM and an Optuna pruning decision stop a run on purpose: KILLED, not FAILED.
        pruned = type(e).__name__ == "TrialPruned"
        if pruned or isinstance(e, KeyboardInterrupt):
            stopped = {STOPPED: e.signal} if getattr(e, "signal", None) else {}  # SIGTERM: no user's decision
            _end(store, run.info.run_id, "KILLED", {"harness.pruned": "true"} if pruned else stopped or None)
            raise
        reason = explain(e, writing=f"the artifacts of run {run.info.run_id} ({run.info.artifact_uri})")
        _end(store, run.info.run_id, "FAILED",
             {NOTE: f"**Failed**: {reason or f'{type(e).__name__}: {str(e).strip()[:500]}'}"})
        if reason is not None and not isinstance(e, HarnessError):
            raise HarnessError(reason) from None  # the fault in words; the outer runs end with the same
        raise
    else:
        _end(store, run.info.run_id, "FINISHED")


@contextlib.contextmanager
def phase_run(store: Store, phase: str, params: dict, run_name: str | None = None, tags: dict | None = None,
              system_metrics: bool = False, join: str | None = None):
    """One MLflow run that no cache decides about (a pipeline's or study's parent, a sweep trial, a
    compare), nested under the active run if there is one, that always ends (`running`). With
    `join`, that existing run is continued in this process instead (a sweep's one parent; `params`
    unused). Phases run through harness/runner/, which adds the cache and the claim."""
    if join is not None:
        # The joined run is this process's now: a run whose owner is gone reads as dead to the next
        # command (liveness.why_dead), and its opener (a --plan-only grid) may have ended long ago.
        with running(store, mlflow.start_run(run_id=join), tags={liveness.OWNER: liveness.owner()}) as pr:
            yield pr
        return
    with running(store, start(store, phase, tags, run_name, system_metrics), params) as pr:
        yield pr


def _end(store: Store, run_id: str, status: str, tags: dict | None = None) -> None:
    """End the active run; when the store no longer answers, drop it locally all the same (it stays
    RUNNING there until the next command marks it FAILED) so that the error that stopped the phase
    is the one the user sees, not a chain of failed writes."""
    store.heartbeat.discard(run_id)
    try:
        if tags:
            log_batch(tags=tags, run_id=run_id, client=store.client)
        mlflow.end_run(status)
    except Exception:
        if status == "FINISHED":
            raise
        from mlflow.tracking.fluent import run_id_to_system_metrics_monitor
        while mlflow.active_run() is not None and mlflow.active_run().info.run_id == run_id:
            mlflow.tracking.fluent._active_run_stack.get().pop()
        monitor = run_id_to_system_metrics_monitor.pop(run_id, None)
        if monitor is not None:
            # Stop sampling and wait for the sampler's thread: a call it has in flight fails too,
            # and its warning must not print after the error line the user is meant to read.
            logging.getLogger(type(monitor).__module__).setLevel(logging.ERROR)
            monitor._shutdown_event.set()
            if monitor._process is not None:
                monitor._process.join(timeout=15)


def log_batch(params: dict | None = None, metrics: dict | None = None, tags: dict | None = None,
              run_id: str | None = None, client: MlflowClient | None = None) -> None:
    """Params, metrics and tags of the active run (or `run_id`) in one call, which MLflow splits at
    its limits; through `client` (the Store's), else a client of the URI MLflow is pointed at."""
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in (params or {}).items()]
    metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    (client or MlflowClient()).log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)


def log_inputs(datasets: list, contexts: list[str], tries: int = 4) -> None:
    """The active run's dataset inputs. MLflow gets or creates each dataset row by (experiment, name,
    digest) without a lock, so two workers logging one dataset at the same moment both insert and
    one fails on the unique key (seen on PostgreSQL behind a tracking server); the row exists by
    then, and the retry finds it."""
    liveness.retrying(lambda: mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets)),
                      CONFLICT, tries=tries, pause=lambda _: random.uniform(0.1, 0.5))


def log_history(rows: list[dict[str, float]], first_step: int = 1, run_id: str | None = None) -> None:
    """Per-epoch curves (step = epoch) in as few calls as MLflow allows (it splits at 1000)."""
    if not rows:
        return
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step)
               for step, row in enumerate(rows, first_step) for key, value in row.items()]
    MlflowClient().log_batch(run_id, metrics=metrics, synchronous=True)
