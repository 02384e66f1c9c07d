"""Baseline vs augmented: deltas of every test metric, as a table in the reference's layout
(metric, baseline, augmented, difference), as MLflow metrics and as a bar chart."""
from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError

HEADLINE = (("accuracy", "Accuracy"), ("f1_weighted", "F1 (weighted)"), ("f1_macro", "F1 (macro)"))
PER_CLASS = ("precision", "recall", "f1")


def rows(base: dict[str, float], aug: dict[str, float], classes) -> list[tuple[str, str, float, float]]:
    """(metric key, label, baseline, augmented) for every test metric both runs have."""
    out = [(k, label, base[f"test/{k}"], aug[f"test/{k}"]) for k, label in HEADLINE]
    for name in classes:
        for stat in PER_CLASS:
            key = f"{name}/{stat}"
            out.append((key, f"{name} {stat.replace('f1', 'F1')}", base[f"test/{key}"], aug[f"test/{key}"]))
    return out


def delta_metrics(table) -> dict[str, float]:
    return {f"delta/{key}": a - b for key, _, b, a in table}


def markdown(table) -> str:
    lines = ["| Metric | Baseline | Augmented | Difference |", "| --- | ---: | ---: | ---: |"]
    for key, label, b, a in table:
        if key == "accuracy":  # the reference reports accuracy in percent, its delta in points
            lines.append(f"| {label} | {100 * b:.2f}% | {100 * a:.2f}% | {100 * (a - b):+.2f} pts |")
        else:
            lines.append(f"| {label} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
    return "\n".join(lines) + "\n"


def figure(table, classes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    labels = ["overall"] + list(classes)
    base = [dict((k, b) for k, _, b, _ in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    aug = [dict((k, a) for k, _, _, a in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.8 + 1.5 * len(labels), 3.8))
    ax.bar(x - 0.2, base, 0.4, label="baseline")
    ax.bar(x + 0.2, aug, 0.4, label="augmented")
    for i, (b, a) in enumerate(zip(base, aug)):
        ax.annotate(f"{a - b:+.3f}", (i, max(a, b)), textcoords="offset points", xytext=(0, 4), ha="center",
                    color="green" if a >= b else "red")
    ax.set_xticks(x, labels)
    ax.set_ylabel("F1 (overall: weighted)")
    ax.set_ylim(min(base + aug) - 0.1, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("baseline vs augmented, test F1")
    fig.tight_layout()
    return fig


def runs_of_pipeline(parent_id: str):
    """The baseline and augmented child runs of a pipeline parent run."""
    client = MlflowClient()
    try:
        parent = client.get_run(parent_id)
    except Exception:
        raise HarnessError(f"no run {parent_id!r} in the tracking store") from None
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    by_phase = {r.data.tags.get("harness.phase"): r for r in children}
    missing = [p for p in ("baseline", "augmented") if p not in by_phase]
    if missing:
        raise HarnessError(f"run {parent_id} has no {' or '.join(missing)} child run: is it a pipeline parent run?")
    return by_phase["baseline"], by_phase["augmented"]


def get_run(run_id: str):
    try:
        return MlflowClient().get_run(run_id)
    except Exception:
        raise HarnessError(f"no run {run_id!r} in the tracking store") from None


def classes_of(run) -> list[str]:
    return run.data.params["data.classes"].split(",")


def check_comparable(base, aug) -> None:
    keys = [k for k in base.data.params if k.startswith("data.") and k != "data.n_train"]
    differ = [k for k in keys if base.data.params.get(k) != aug.data.params.get(k)]
    if differ:
        raise HarnessError("the runs were trained on different data, so they cannot be compared: "
                           + "; ".join(f"{k} = {base.data.params.get(k)} vs {aug.data.params.get(k)}" for k in differ))
