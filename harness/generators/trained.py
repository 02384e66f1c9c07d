"""The training loop of every generator kind that trains (`TRAINS = True`: gan, diffusion): the budget
in steps or epochs, checkpoints every N epochs, the two training-state slots and the newest-intact
fallback, carry-over on `--resume` and when a dead worker's run is taken over, a LoggedModel and the
sample quality per checkpoint, the sample series, progress, and the curves written on any exit. A
kind supplies its model and a few words; this module does the rest, so a new trained kind copies
none of it.

What a trained kind module provides:
  PREFIX                      its metric prefix ("gan"): PREFIX/samples, PREFIX/epochs, PREFIX/seconds
  STEPS                       what one budget step is called ("generator_iters"): PREFIX/STEPS_total
  settings(cfg)               its config section, with iterations, epochs, batch_size, sample_every,
                              checkpoint_every
  trainer(cfg, device, n_classes, channels, image_size) -> a Trainer (below)
  steps_per_epoch(n_real, settings) -> int
  curves_figure(history)      its loss curves (loss_curves.png)
  summary(cfg, trainer, history, seconds) -> the run's description (Markdown)

A Trainer holds the model and its optimizer state: `epoch`, `steps`, `train_epoch(real, labels,
max_steps) -> metrics row` (stops early once `steps` reaches max_steps, when it is > 0),
`preview()` (uint8 images of fixed noise, for the series), `quality_images(n)`, `checkpoint()`
(the sampler's weights and what rebuilds it), `exportable()` ((module, example) for the
LoggedModel), `state_dict()`, `load_state_dict()`, `progress(row)` (a line for the bar).

Artifacts of a trained kind's generator run:
  images/ (key PREFIX/samples, step = epoch)  fixed-noise samples every sample_every epochs and at the end
  checkpoints/generator_epoch_XXXX.pt       the sampler: every checkpoint_every epochs and at the end;
                                            torch.load(weights_only=True)
  checkpoints/training_state_{0,1}.pt       everything --resume continues from, with the curves. Two
                                            slots written in turn, so that a torn write (a full disk, a
                                            kill during the upload) leaves the previous state intact
  loss_curves.png
Metrics (step = epoch): the kind's row per epoch; final PREFIX/epochs, PREFIX/seconds,
PREFIX/STEPS_total; with quality.enabled quality/* per checkpoint (also on its LoggedModel).
"""
from __future__ import annotations

import re
import time

import mlflow

from harness import progress
from harness.errors import HarnessError
from harness.tracking import codecs
from harness.tracking.store import describe, log_history

CHECKPOINT = re.compile(r"checkpoints/generator_epoch_(\d+)\.pt$")
STATE_SLOTS = ("checkpoints/training_state_0.pt", "checkpoints/training_state_1.pt")
LEGACY_STATE = "checkpoints/training_state.pt"  # one slot, overwritten: runs before the two slots
SERIES_STEP = re.compile(r"\+step\+(\d+)\+")  # images/gan~samples+step+12+... : the image series' step
QUALITY = ("quality/fd", "quality/kid", "quality/precision", "quality/recall")


def checkpoint_path(epoch: int) -> str:
    return f"checkpoints/generator_epoch_{epoch:04d}.pt"


def checkpoints(run_id: str) -> dict[int, str]:
    """epoch -> artifact path of each generator checkpoint in a generator run."""
    out = {}
    for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoints"):
        m = CHECKPOINT.search(a.path)
        if m:
            out[int(m.group(1))] = a.path
    return dict(sorted(out.items()))


def best_checkpoint(run_id: str) -> int:
    """The checkpoint epoch with the lowest Frechet distance the generator run measured
    (quality.enabled): the best of its LoggedModels, or of its metric history (a resumed run's
    earlier checkpoints are models of the run it continued)."""
    run = mlflow.MlflowClient().get_run(run_id)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'", output_format="list",
                                         order_by=[{"field_name": "metrics.quality/fd", "ascending": True}])
    scored = [m for m in models if any(x.key == "quality/fd" for x in (m.metrics or []))]
    available = checkpoints(run_id)
    if scored and int(scored[0].params["epoch"]) in available and "harness.resumed_from" not in run.data.tags:
        return int(scored[0].params["epoch"])
    fd = {m.step: m.value for m in mlflow.MlflowClient().get_metric_history(run_id, "quality/fd")}
    scored = [e for e in available if e in fd]
    if not scored:
        raise HarnessError(f"generator run {run_id} measured no sample quality at its checkpoints; "
                           "generate.checkpoint_epoch=-1 needs a generator run trained with quality.enabled=true")
    return min(scored, key=fd.get)


def load_checkpoint(memo, run_id: str, epoch: int | None, build) -> tuple:
    """(the sampler of checkpoint `epoch` (None: the last) of a generator run, its checkpoint dict);
    `build(ckpt)` makes the module its weights go into. Held in the memo: a finished run's
    checkpoints never change, and sweep trials sample the same few (callers only use it in eval mode)."""
    if (run_id, epoch) in memo.generators:
        return memo.generators[(run_id, epoch)]
    available = checkpoints(run_id)
    if not available:
        raise HarnessError(f"generator run {run_id} has no generator checkpoints")
    chosen = max(available) if not epoch else epoch
    if chosen not in available:
        raise HarnessError(f"generator run {run_id} has no checkpoint for epoch {chosen}; available: "
                           f"{', '.join(map(str, available))}")
    ckpt = codecs.load_torch(run_id, available[chosen])
    module = build(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    return memo.remember(memo.generators, (run_id, epoch), (module.eval(), ckpt))


def preflight(ctx, cfg, settings, section: str, source: str | None = None) -> None:
    """Before any run opens: a batch the training set can fill; before the generate run opens: the
    checkpoint asked for must be in the generator run."""
    n_train = len(ctx.splits(cfg.data).train_x)
    if settings.batch_size > n_train:
        raise HarnessError(f"{section}.batch_size ({settings.batch_size}) is larger than the training set ({n_train} "
                           f"images); lower it to at most {n_train}")
    epoch = cfg.generate.checkpoint_epoch
    if source is None or epoch <= 0:
        return
    available = checkpoints(source)
    if epoch not in available:
        raise HarnessError(f"generate.checkpoint_epoch={epoch}: generator run {source} has no checkpoint for that "
                           f"epoch; available: {', '.join(map(str, available)) or 'none'} (0 = the last)")


# ---------------------------------------------------------------------------------------------
# Resume: the training state of an interrupted run

def newest_state(store, run_id: str, say: bool = False) -> dict | None:
    """The newest intact training state of a run (None if it has none): an unreadable slot is named
    (with `say`) and passed over for the other."""
    names = {a.path for a in store.client.list_artifacts(run_id, "checkpoints")}
    states = []
    for path in [p for p in (*STATE_SLOTS, LEGACY_STATE) if p in names]:
        try:
            states.append((codecs.load_torch(run_id, path), path))
        except HarnessError as e:
            if say:
                store.say(f"generator: {e}; passing over it")
    if not states:
        return None
    state, path = max(states, key=lambda sp: sp[0]["epoch"])
    if say and len(states) < len([p for p in (*STATE_SLOTS, LEGACY_STATE) if p in names]):
        store.say(f"generator: resuming from the newest intact state, {path} (epoch {state['epoch']})")
    return state


def resumable(store, run_id: str) -> bool:
    return newest_state(store, run_id, say=True) is not None


def _carry_over(store, old: str) -> tuple[dict, list]:
    """The interrupted run's newest intact training state, with its curves, checkpoints and samples up
    to that epoch copied into the active run, so that this run alone tells the whole story."""
    from mlflow.entities import Metric
    state = newest_state(store, old)
    epoch = state["epoch"]
    history = state.pop("history")
    log_history(history, first_step=1)
    client = store.client
    # Measured at the old run's checkpoints, outside `history`: checkpoint_epoch=-1 needs them all.
    quality = [Metric(m.key, m.value, m.timestamp, m.step)
               for key in QUALITY for m in client.get_metric_history(old, key) if m.step <= epoch]
    if quality:
        client.log_batch(mlflow.active_run().info.run_id, metrics=quality, synchronous=True)
    for e, path in checkpoints(old).items():
        if e <= epoch:
            mlflow.log_artifact(codecs.download(old, path), "checkpoints")
    for a in client.list_artifacts(old, "images"):  # the sample series so far
        step = SERIES_STEP.search(a.path)
        if step is None or int(step.group(1)) <= epoch:
            mlflow.log_artifact(codecs.download(old, a.path), "images")
    store.say(f"generator: resuming run {old} from epoch {epoch}")
    return state, history


# ---------------------------------------------------------------------------------------------
# The loop, inside the generator phase's run

def fit(ctx, cfg, splits, kind, resume_from: str | None = None, evaluator=None, start=None) -> None:
    """Train (or continue `resume_from`) generator kind `kind` (its module) inside the active run,
    checkpointing as configured. `start` = (state, where): weights to start from (the kind's init),
    which its trainer's `start_from(state, classes, where) -> words` loads."""
    s = kind.settings(cfg)
    state, history = _carry_over(ctx.store, resume_from) if resume_from else (None, [])
    trainer = kind.trainer(cfg, ctx.device, len(splits.classes), splits.train_x.shape[1], splits.train_x.shape[-1])
    started = trainer.start_from(start[0], splits.classes, start[1]) if start is not None else ""
    if state is not None:  # after start_from: what it froze stays frozen, the weights are the state's
        trainer.load_state_dict(state)
    real, labels = splits.train_x.to(ctx.device), splits.train_y.to(ctx.device)
    pending: list[dict] = []  # epochs not yet sent to MLflow: flushed at each checkpoint
    slots = {path: -1 for path in STATE_SLOTS}  # the epoch each training-state slot holds in this run
    start = time.perf_counter()

    def checkpoint():
        log_history(pending, first_step=trainer.epoch - len(pending) + 1)
        pending.clear()
        # The sampler (an EMA copy where the kind keeps one) is what later phases use; as a
        # LoggedModel (step = epoch) it is one row of the Models tab, its quality linked to it.
        module, example = trainer.exportable()
        model_id = codecs.log_pytorch_model(module, "generator", example, step=trainer.epoch,
                                            params={"epoch": trainer.epoch})
        if evaluator is not None:
            # Per checkpoint: a sweep or a reader can pick the epoch by sample quality.
            # One write: on the run (step = epoch) and linked to the checkpoint's LoggedModel.
            quality = evaluator.measure(trainer.quality_images(cfg.quality.n_samples), cfg.quality.k)
            mlflow.log_metrics(quality, step=trainer.epoch, model_id=model_id, synchronous=True)
        codecs.log_torch(trainer.checkpoint() | {"classes": list(splits.classes)}, checkpoint_path(trainer.epoch))
        older = min(slots, key=slots.get)  # the other slot keeps the previous state intact meanwhile
        codecs.log_torch(trainer.state_dict() | {"history": history, "classes": list(splits.classes)}, older)
        slots[older] = trainer.epoch

    # A budget in steps is the same for every data size; else in epochs.
    planned = -(-s.iterations // kind.steps_per_epoch(len(real), s)) if s.iterations else s.epochs

    def finished() -> bool:
        return trainer.steps >= s.iterations if s.iterations else trainer.epoch >= s.epochs

    try:
        with progress.bar(max(0, planned - trainer.epoch), kind.PREFIX, unit="epochs",
                          item_show_func=lambda line: line) as bar:
            while not finished():
                ctx.store.check_reachable()
                row = trainer.train_epoch(real, labels, s.iterations)
                history.append(row)
                pending.append(row)
                e, last = trainer.epoch, finished()
                if e % s.sample_every == 0 or last:
                    codecs.log_image_grid(trainer.preview(), key=f"{kind.PREFIX}/samples", step=e)
                if e % s.checkpoint_every == 0 or last:
                    checkpoint()
                bar.current_item = trainer.progress(row)
                bar.update(1)
    except BaseException:
        # Ctrl-C, SIGTERM, a divergence: the curves of the epochs since the last checkpoint are kept
        # (a store that stopped answering cannot take them; the error that stopped us comes first).
        try:
            log_history(pending, first_step=trainer.epoch - len(pending) + 1)
        except Exception:
            pass
        raise
    seconds = time.perf_counter() - start
    mlflow.log_metrics({f"{kind.PREFIX}/epochs": trainer.epoch, f"{kind.PREFIX}/seconds": seconds,
                        f"{kind.PREFIX}/{kind.STEPS}_total": trainer.steps})
    codecs.log_figure(kind.curves_figure(history), "loss_curves.png")
    describe(kind.summary(cfg, trainer, history, seconds) + (f"\n\nInitialisation: {started}." if started else ""))
