"""Classification metrics, thin over scikit-learn, in one vocabulary: `test/accuracy`, `test/<class>/f1`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scikit-learn is imported where it is used: it takes ~1 s to import (scipy.stats with it), and a
# fully cached command reads finished metrics from the store without computing any.


@dataclass
class Evaluation:
    metrics: dict[str, float]  # flat, MLflow-ready
    report: dict  # sklearn's classification_report(output_dict=True)
    report_text: str
    confusion: np.ndarray  # rows = true class, columns = predicted
    pred: np.ndarray
    confidence: np.ndarray  # top-class probability


def evaluate(y_true, proba, classes, prefix: str = "test") -> Evaluation:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    pred = proba.argmax(1)
    labels = list(range(len(classes)))
    report = classification_report(y_true, pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    text = classification_report(y_true, pred, labels=labels, target_names=list(classes), digits=4, zero_division=0)
    metrics = {f"{prefix}/accuracy": accuracy_score(y_true, pred),
               f"{prefix}/f1_weighted": f1_score(y_true, pred, labels=labels, average="weighted", zero_division=0),
               f"{prefix}/f1_macro": f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)}
    for name in classes:
        for stat in ("precision", "recall"):
            metrics[f"{prefix}/{name}/{stat}"] = report[name][stat]
        metrics[f"{prefix}/{name}/f1"] = report[name]["f1-score"]
    return Evaluation({k: float(v) for k, v in metrics.items()}, report, text,
                      confusion_matrix(y_true, pred, labels=labels), pred, proba.max(1))
