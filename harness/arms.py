"""The classifier of both arms as a library: train the network of classifier.kind and log what the baseline and the
synthetic arm log alike (curves, weights, test report), load a logged model back.

Artifacts of a classifier run:
  classification_report.json / .txt   sklearn's per-class precision, recall, F1, support
  confusion_matrix.png                test-set confusion matrix
  training_curves.png                 per-epoch loss and accuracy
  model/model.pt                      {"state_dict", "config", "classes", "channels", "image_size"};
                                      torch.load(weights_only=True)
  predictions.json                    MLflow table: test index, label, predicted, confidence (mlflow.load_table)
  LoggedModel <label>                 the same network as an MLflow model (pickle-free pt2), test metrics linked
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import mlflow
import torch

from harness import classifiers, config, figures, metrics, train
from harness.config import ClassifierConfig
from harness.context import PhaseResult
from harness.data import Splits
from harness.tracking import codecs
from harness.tracking.store import describe, log_history


@dataclass
class ClassifierResult(PhaseResult):
    trained: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        # Loaded on demand: a reused run's weights are read only if someone asks (sweeps never do).
        if self.trained is None:
            self.trained = load_model(self.source_run_id)[0]
        return self.trained


def fit_and_report(cfg, splits: Splits, device: torch.device, label: str, on_epoch=None, evaluate_test: bool = True,
                   synthetic=None, start=None, slot: str = "synthetic", origin: str = "",
                   stage: tuple | None = None) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train on the real training images (+ `synthetic` = (images, labels, soft or None)) from `start`
    (weights.starting: the starting weights, or None from scratch) and log
    curves, weights and (unless `evaluate_test` is off, as in sweep trials, which must never see
    the test set) test metrics and artifacts to the active run. `slot`: what the extra images are
    called in the run's description (the control arm's are "replayed real"); `origin`: where `start`
    came from in words (default: classifier.init). `stage` = (images, labels, soft or None): train on
    these alone instead of the real images (synthetic_use=pretrain's first stage)."""
    done: list[dict] = []

    def hook(epoch: int, row: dict) -> None:
        done.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    x, y, soft_x = stage if stage is not None else (splits.train_x, splits.train_y, None)
    try:
        model, history = train.train_classifier(x, y, len(splits.classes), cfg.classifier,
                                                device, val=(splits.val_x, splits.val_y), label=label, on_epoch=hook,
                                                synthetic=synthetic, start=start, section=classifiers.section_of(cfg),
                                                soft_x=soft_x)
    except BaseException:
        log_history(done)  # a pruned or interrupted run keeps the curves it had
        raise
    log_history(history.epochs)
    codecs.log_figure(figures.curves_figure(history.epochs, label), "training_curves.png")
    model_id = log_model(model, cfg, splits.classes, label, splits.test_x[:2])
    n_syn = len(synthetic[0]) if synthetic is not None else 0
    c = train.in_epochs(cfg.classifier, len(x))
    mixing = (f"; synthetic share {c.synthetic_share}" if c.synthetic_share else f"; budget {c.budget}") + \
             (f", synthetic weight {c.synthetic_weight}" if c.synthetic_weight != 1 else "") + \
             (f", soft labels (T={cfg.pseudolabel.temperature})" if synthetic is not None and synthetic[2] is not None else "") + \
             (f", last {c.real_only_epochs} epochs real only" if c.real_only_epochs else "")
    how = {"train": "fine-tuned from" if start else "trained from scratch",
           "probe": "linear probe (backbone frozen) of", "probe-then-train": "probed, then fine-tuned (LP-FT), from"}
    origin = f" {origin or f'`{cfg.classifier.init}`'}" if start else ""
    images = f"{len(x)} {slot} images alone" if stage is not None else \
        f"{len(splits.train_x)} real{f' + {n_syn} {slot}' if n_syn else ''} images"
    trained = (f"**{label}**: {classifiers.in_words(cfg.classifier)} {how[cfg.classifier.mode]}{origin} on {images} for {c.epochs} epochs"
               f"{f' (classifier.steps {cfg.classifier.steps})' if cfg.classifier.steps else ''} "
               f"(augmentation {c.augmentation}{mixing if n_syn else ''}; "
               f"{'forward passes in bf16 autocast' if c.precision == 'bf16' else 'fp32'}).")
    final = {"val/accuracy": history.epochs[-1]["val/accuracy"]} if "val/accuracy" in history.epochs[-1] else {}
    if not evaluate_test or stage is not None:
        why = "a first stage: the arm it leads to is the one tested" if stage is not None else \
            "sweep trials choose by validation only"
        describe(f"{trained}\n\nValidation accuracy **{100 * final.get('val/accuracy', 0):.2f}%** "
                 f"(test set not evaluated: {why}).")
        return model, final
    return model, final | report_test(model, splits, device, label, trained, model_id)


MIXING = tuple(name.split(".")[1] for name in config.MIXING)  # how a slot mixes into real batches


def unmixed(cfg):
    """The config with the mixing fields at their defaults: under classifier.synthetic_use=pretrain no
    stage mixes, so none of them is read (and the keys leave them out: harness/table.py)."""
    fresh = ClassifierConfig()
    return dataclasses.replace(cfg, classifier=dataclasses.replace(
        cfg.classifier, **{f: getattr(fresh, f) for f in MIXING}))


def train_arm(ctx, cfg, inputs: dict, label: str, slot: str, count: str, extra, on_epoch=None,
              evaluate_test: bool = True, model_run: str | None = None, stage: str = "") -> ClassifierResult:
    """An arm that trains on the real images plus `extra(splits)` = (images, labels, soft or None) or None
    in its synthetic slot (the synthetic arm's kept images, the control's replayed real ones), from
    classifier.init; logs it as the baseline is logged, plus data/n_real and data/n_<count>. `model_run`:
    test the model a sweep trial trained instead of training again. `stage`: the phase that trained the
    network on the slot alone first (synthetic_use=pretrain), whose weights this arm starts from and
    then trains on the real images alone."""
    from harness.classifiers import weights
    splits = ctx.splits(cfg.data)
    if model_run:
        m, model = evaluate_run(ctx, cfg, splits, model_run, label, slot)
        return ClassifierResult("", m, trained=model)
    first = inputs.get(stage)
    if first is not None and first.metrics.get(f"data/n_{count}", 0):
        sizes = {"data/n_real": len(splits.train_x), f"data/n_{count}": first.metrics.get(f"data/n_{count}", 0)}
        mlflow.log_metrics(sizes)
        start = ({k: v.detach().cpu() for k, v in first.model.state_dict().items()}, f"{stage}:{first.downstream_key}")
        model, m = fit_and_report(unmixed(cfg), splits, ctx.device, label, on_epoch=on_epoch, evaluate_test=evaluate_test,
                                  start=start, slot=slot,
                                  origin=f"the {stage} run `{first.source_run_id}` (trained on "
                                         f"{int(sizes[f'data/n_{count}'])} {slot} images alone)")
        return ClassifierResult("", m | sizes, trained=model)
    added = extra(splits) if first is None else None
    sizes = {"data/n_real": len(splits.train_x), f"data/n_{count}": len(added[0]) if added is not None else 0}
    mlflow.log_metrics(sizes)
    model, m = fit_and_report(cfg, splits, ctx.device, label, on_epoch=on_epoch, evaluate_test=evaluate_test,
                              synthetic=added, start=weights.starting(ctx, cfg.classifier, inputs), slot=slot)
    return ClassifierResult("", m | sizes, trained=model)


def train_stage(ctx, cfg, inputs: dict, label: str, slot: str, count: str, extra) -> ClassifierResult:
    """synthetic_use=pretrain's first stage: the arm's network trained on `extra(splits)` = (images,
    labels, soft or None) alone, from classifier.init, with the classifier's recipe; logged as an arm
    but for the test set, which only the arm it leads to sees (a sweep trial runs stages too), plus
    data/n_<count>."""
    from harness.classifiers import weights
    splits = ctx.splits(cfg.data)
    added = extra(splits)
    sizes = {f"data/n_{count}": len(added[0]) if added is not None else 0}
    mlflow.log_metrics(sizes)
    if not sizes[f"data/n_{count}"]:  # nothing kept: the arm trains as the baseline does, as under `mix`
        describe(f"**{label}**: no {slot} images to train on (nothing was kept); the arm starts from "
                 f"classifier.init (`{cfg.classifier.init}`) as the baseline does.")
        return ClassifierResult("", sizes)
    model, m = fit_and_report(unmixed(cfg), splits, ctx.device, label, start=weights.starting(ctx, cfg.classifier, inputs),
                              slot=slot, stage=added)
    return ClassifierResult("", m | sizes, trained=model)


def evaluate_run(ctx, cfg, splits: Splits, model_run: str, label: str, slot: str) -> tuple[dict[str, float], torch.nn.Module]:
    """The test evaluation of an arm's model trained earlier without it (a sweep trial's, chosen by
    validation), on the active run: the same metrics and artifacts as an arm trained here."""
    model, _ = load_model(model_run)
    trained = dict(ctx.store.get_run(model_run).data.metrics)
    m = {k: v for k, v in trained.items() if k == "val/accuracy" or k.startswith("data/n_")}
    mlflow.log_metrics(m)
    model_id = log_model(model, cfg, splits.classes, label, splits.test_x[:2])
    extra = int(m.get("data/n_synthetic", m.get("data/n_replayed", 0)))
    m |= report_test(model, splits, ctx.device, label,
                     f"**{label}**: the {classifiers.in_words(cfg.classifier)} of run `{model_run}` (trained on real + "
                     f"{extra} {slot} images, chosen by validation), evaluated once on the test set.", model_id)
    return m, model


def report_test(model: torch.nn.Module, splits: Splits, device: torch.device, label: str, trained: str,
                model_id: str | None = None) -> dict[str, float]:
    """Test metrics and their artifacts on the active run (and on its logged model, whose row in the
    Models tab then shows them); `trained` says how the model was made."""
    proba = train.predict_proba(model, splits.test_x, device).numpy()
    ev = metrics.evaluate(splits.test_y.numpy(), proba, splits.classes)
    mlflow.log_metrics(ev.metrics)
    if model_id:
        mlflow.log_metrics({k: ev.metrics[k] for k in ("test/accuracy", "test/f1_weighted", "test/f1_macro")},
                           model_id=model_id)
    codecs.log_json(ev.report, "classification_report.json")
    mlflow.log_text(ev.report_text, "classification_report.txt")
    codecs.log_figure(figures.confusion_figure(ev, splits.classes, f"{label}: test accuracy {ev.metrics['test/accuracy']:.4f}"),
                      "confusion_matrix.png")
    mlflow.log_table({"index": list(range(len(ev.pred))), "label": splits.test_y.tolist(),
                      "predicted": ev.pred.tolist(), "confidence": ev.confidence.round(6).tolist()}, "predictions.json")
    per_class = ", ".join(f"{c} {ev.metrics[f'test/{c}/f1']:.3f}" for c in splits.classes)
    describe(f"{trained}\n\nTest accuracy **{100 * ev.metrics['test/accuracy']:.2f}%**, "
             f"weighted F1 **{ev.metrics['test/f1_weighted']:.4f}**; per-class F1: {per_class}. "
             f"See confusion_matrix.png and classification_report.txt.")
    return ev.metrics


def log_model(model: torch.nn.Module, cfg, classes, name: str, example: torch.Tensor) -> str:
    """The weights twice, for two readers: `model/model.pt` (a state dict the harness loads with
    weights_only=True) and an MLflow LoggedModel `name` (the Models tab; `mlflow.pytorch.load_model`
    gives a module that takes uint8 images). Returns the LoggedModel's id."""
    codecs.log_torch({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                      "config": asdict(cfg), "classes": list(classes), "channels": model.channels,
                      "image_size": model.image_size, "classifier": {"kind": model.kind, "width": model.width},
                      **({"section": asdict(s)} if model.kind == cfg.classifier.kind
                         and (s := classifiers.section_of(cfg)) is not None else {})},
                     "model/model.pt")
    return codecs.log_pytorch_model(model, name, example, params={"classes": ",".join(classes)})


def load_model(run_id: str) -> tuple[torch.nn.Module, list[str]]:
    """The network a run saved, rebuilt from the kind and settings its checkpoint records (a
    checkpoint from before kinds is a SimpleCNN's)."""
    saved = codecs.load_torch(run_id, "model/model.pt")
    settings = ClassifierConfig(**saved.get("classifier", {"kind": "simplecnn", "width": 0}))
    own = config.kind_sections().get(settings.kind)  # absent: building the kind says it is not installed
    section = own(**saved["section"]) if own is not None and "section" in saved else None
    model = classifiers.build(settings, len(saved["classes"]), saved.get("channels", 3), saved.get("image_size", 32),
                              section)
    model.load_state_dict(saved["state_dict"])
    return model, saved["classes"]


def summary(title: str, metrics: dict[str, float], classes) -> str:
    """The test metrics as terminal lines."""
    lines = [f"\n{title}", f"  accuracy     {metrics['test/accuracy']:.4f}",
             f"  F1 weighted  {metrics['test/f1_weighted']:.4f}", f"  F1 macro     {metrics['test/f1_macro']:.4f}"]
    lines += [f"  {name:<12} P {metrics[f'test/{name}/precision']:.4f}  R {metrics[f'test/{name}/recall']:.4f}"
              f"  F1 {metrics[f'test/{name}/f1']:.4f}" for name in classes]
    return "\n".join(lines)


def stage_summary(label: str, result: ClassifierResult, count: str, cfg) -> str:
    n = int(result.metrics.get(f"data/n_{count}", 0))
    if not n:
        return f"\n{label} run {result.run_id}: nothing kept, no stage trained"
    return (f"\n{label} run {result.run_id}: trained on {n} {count} images alone, validation accuracy "
            f"{result.metrics.get('val/accuracy', float('nan')):.4f} (the test set is the second stage's)")
