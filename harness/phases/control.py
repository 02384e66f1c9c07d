"""Control phase: the recipe-matched control arm. The synthetic arm's network, starting weights, mode,
steps, batch composition, loss weights, schedule, augmentation and real-only epochs, with its synthetic
slot filled by the real training images themselves (replayed in seeded passes, as generator.kind=replay
draws them), so that a pipeline's three arms split its result in two:

    synthetic - control  = what the generated images add (images/*: the headline)
    control - baseline   = what the recipe adds (recipe/*: more images per step, their weight, real-only epochs)
    synthetic - baseline = the two together (delta/*, its meaning since the first version)

Of the kept images it reads only how many there are (`slots`, in its key through `keyed_on`), so that one control serves every
generator of a seed that asks for the same slot:
- a fixed-share recipe (classifier.synthetic_share > 0) adds the same number of slot images to every
  step whatever their count: the slot holds the training set once, and one control serves every
  generator, sample count and threshold that keeps at least one image;
- an epoch or step budget over real + kept images (the reference's) grows the step count or shrinks
  the batches' real share with the kept count: the control replays exactly as many images as were
  kept, and serves the generators that keep as many;
- nothing kept: the synthetic arm is the baseline's training, and so is the control's (an empty slot).
Under classifier.synthetic_use=pretrain the slot is trained on alone first (phase control_stage, as
many replayed images as were kept), and this arm then trains on the real images from those weights.

Artifacts: the baseline's (harness/arms.py). Metrics: the baseline's, data/n_real and data/n_replayed.
Options as the synthetic phase: `on_epoch`, `evaluate_test=False`, `model_run`.
"""
from __future__ import annotations

from harness import arms
from harness.arms import ClassifierResult
from harness.classifiers import weights
from harness.generators import replay
from harness.phases import before, check  # noqa: F401 (the protocol's defaults)

ALL = "all"  # the slot of a fixed-share recipe: the training set once, whatever was kept


def slots(cfg, inputs) -> str:
    """What the control's key covers of the kept images: `all`, or how many were kept."""
    kept = int(inputs["pseudolabel"].metrics["kept/count"])
    mixes = cfg.classifier.synthetic_use == "mix"  # a first stage on the slot alone trains on as many as were kept
    return ALL if kept and mixes and cfg.classifier.synthetic_share > 0 else str(kept)


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """Starting weights from outside (their content), and of the kept images only their slot: one
    control serves every generator that fills the slot alike (the table's `sized`)."""
    return weights.digest(ctx, cfg.classifier.init), f"slots={slots(cfg, inputs)}"


def replayed(cfg, inputs, n_real: int) -> int:
    slot = slots(cfg, inputs)
    return n_real if slot == ALL else int(slot)


def slot(cfg, inputs, splits):
    """The replayed real images of the synthetic slot: (images, labels, None), or None for an empty slot."""
    n = replayed(cfg, inputs, len(splits.train_x))
    idx = replay.indices(len(splits.train_x), cfg.classifier.seed, 0, n)
    return (splits.train_x[idx], splits.train_y[idx], None) if n else None


def compute(ctx, cfg, inputs, on_epoch=None, evaluate_test: bool = True, model_run: str | None = None) -> ClassifierResult:
    return arms.train_arm(ctx, cfg, inputs, "control", "replayed real", "replayed",
                          lambda splits: slot(cfg, inputs, splits), on_epoch, evaluate_test, model_run,
                          stage="control_stage")


def load(ctx, cfg, run) -> ClassifierResult:
    return ClassifierResult(run.info.run_id, dict(run.data.metrics))


def summary(result: ClassifierResult, cfg) -> str:
    return arms.summary(f"control run {result.run_id} ({int(result.metrics.get('data/n_replayed', 0))} "
                              "replayed real images in the synthetic slot)", result.metrics, cfg.data.classes)
