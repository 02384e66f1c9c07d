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
                   synthetic=None, start=None, slot: str = "synthetic") -> tuple[torch.nn.Module, dict[str, float]]:
    """Train on the real training images (+ `synthetic` = (images, labels, soft or None)) from `start`
    (weights.starting: the starting weights, or None from scratch) and log
    curves, weights and (unless `evaluate_test` is off, as in sweep trials, which must never see
    the test set) test metrics and artifacts to the active run. `slot`: what the extra images are
    called in the run's description (the control arm's are "replayed real")."""
    done: list[dict] = []

    def hook(epoch: int, row: dict) -> None:
        done.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    try:
        model, history = train.train_classifier(splits.train_x, splits.train_y, len(splits.classes), cfg.classifier,
                                                device, val=(splits.val_x, splits.val_y), label=label, on_epoch=hook,
                                                synthetic=synthetic, start=start, section=classifiers.section_of(cfg))
    except BaseException:
        log_history(done)  # a pruned or interrupted run keeps the curves it had
        raise
    log_history(history.epochs)
    codecs.log_figure(figures.curves_figure(history.epochs, label), "training_curves.png")
    model_id = log_model(model, cfg, splits.classes, label, splits.test_x[:2])
    n_syn = len(synthetic[0]) if synthetic is not None else 0
    c = train.in_epochs(cfg.classifier, len(splits.train_x))
    mixing = (f"; synthetic share {c.synthetic_share}" if c.synthetic_share else f"; budget {c.budget}") + \
             (f", synthetic weight {c.synthetic_weight}" if c.synthetic_weight != 1 else "") + \
             (f", soft labels (T={cfg.pseudolabel.temperature})" if synthetic is not None and synthetic[2] is not None else "") + \
             (f", last {c.real_only_epochs} epochs real only" if c.real_only_epochs else "")
    how = {"train": "fine-tuned from" if start else "trained from scratch",
           "probe": "linear probe (backbone frozen) of", "probe-then-train": "probed, then fine-tuned (LP-FT), from"}
    origin = f" `{cfg.classifier.init}`" if start else ""
    trained = (f"**{label}**: {classifiers.in_words(cfg.classifier)} {how[cfg.classifier.mode]}{origin} on {len(splits.train_x)} real"
               f"{f' + {n_syn} {slot}' if n_syn else ''} images for {c.epochs} epochs"
               f"{f' (classifier.steps {cfg.classifier.steps})' if cfg.classifier.steps else ''} "
               f"(augmentation {c.augmentation}{mixing if n_syn else ''}; "
               f"{'forward passes in bf16 autocast' if c.precision == 'bf16' else 'fp32'}).")
    final = {"val/accuracy": history.epochs[-1]["val/accuracy"]} if "val/accuracy" in history.epochs[-1] else {}
    if not evaluate_test:
        describe(f"{trained}\n\nValidation accuracy **{100 * final.get('val/accuracy', 0):.2f}%** "
                 "(test set not evaluated: sweep trials choose by validation only).")
        return model, final
    return model, final | report_test(model, splits, device, label, trained, model_id)


def train_arm(ctx, cfg, inputs: dict, label: str, slot: str, count: str, extra, on_epoch=None,
              evaluate_test: bool = True, model_run: str | None = None) -> ClassifierResult:
    """An arm that trains on the real images plus `extra(splits)` = (images, labels, soft or None) or None
    in its synthetic slot (the synthetic arm's kept images, the control's replayed real ones), from
    classifier.init; logs it as the baseline is logged, plus data/n_real and data/n_<count>. `model_run`:
    test the model a sweep trial trained instead of training again."""
    from harness.classifiers import weights
    splits = ctx.splits(cfg.data)
    if model_run:
        m, model = evaluate_run(ctx, cfg, splits, model_run, label, slot)
        return ClassifierResult("", m, trained=model)
    added = extra(splits)
    sizes = {"data/n_real": len(splits.train_x), f"data/n_{count}": len(added[0]) if added is not None else 0}
    mlflow.log_metrics(sizes)
    model, m = fit_and_report(cfg, splits, ctx.device, label, on_epoch=on_epoch, evaluate_test=evaluate_test,
                              synthetic=added, start=weights.starting(ctx, cfg.classifier, inputs), slot=slot)
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
