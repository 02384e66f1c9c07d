"""Baseline vs augmented: deltas of every test metric, as a table in the reference's layout
(metric, baseline, augmented, difference), as MLflow metrics and as a bar chart."""
from __future__ import annotations

from dataclasses import dataclass

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
    import numpy as np

    from harness.metrics import subplots
    labels = ["overall"] + list(classes)
    base = [dict((k, b) for k, _, b, _ in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    aug = [dict((k, a) for k, _, _, a in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    x = np.arange(len(labels))
    fig, ax = subplots(figsize=(1.8 + 1.5 * len(labels), 3.8))
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


# ---------------------------------------------------------------------------------------------
# Several paired seeds: is the delta real?

ALPHA = 0.05


@dataclass
class Pair:
    seed: str
    baseline: object  # mlflow Run
    augmented: object


def pairs_of_study(study_id: str) -> list[Pair]:
    """The (baseline, augmented) pair of each pipeline under a multi-seed study run."""
    client = MlflowClient()
    study = get_run(study_id)
    pipes = client.search_runs([study.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{study_id}' and tags.`harness.phase` = 'pipeline'",
                               order_by=["attributes.start_time ASC"])
    return [Pair(p.data.params.get("data.seed", "?"), *runs_of_pipeline(p.info.run_id)) for p in pipes]


def pairs_of_experiment(experiment: str, filter_string: str = "") -> list[Pair]:
    """Every finished pipeline of an experiment, optionally narrowed by an MLflow filter string."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise HarnessError(f"no experiment {experiment!r} in the tracking store")
    query = "tags.`harness.phase` = 'pipeline' and attributes.status = 'FINISHED'"
    if filter_string.strip():
        query += f" and {filter_string}"
    try:
        pipes = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time ASC"], max_results=1000)
    except Exception as e:
        raise HarnessError(f"bad --filter {filter_string!r}: {str(e).splitlines()[0]}") from None
    if not pipes:
        raise HarnessError(f"no finished pipeline runs in experiment {experiment!r} match {filter_string!r}")
    return [Pair(p.data.params.get("data.seed", "?"), *runs_of_pipeline(p.info.run_id)) for p in pipes]


def pairs_for(parent: str | None, baseline_id: str | None, augmented_id: str | None,
              experiment: str | None, filter_string: str | None) -> list[Pair]:
    if parent:
        run = get_run(parent)
        if run.data.tags.get("harness.phase") == "study":
            return pairs_of_study(parent)
        base, aug = runs_of_pipeline(parent)
        return [Pair(base.data.params.get("data.seed", "?"), base, aug)]
    if baseline_id and augmented_id:
        base, aug = get_run(baseline_id), get_run(augmented_id)
        return [Pair(base.data.params.get("data.seed", "?"), base, aug)]
    return pairs_of_experiment(experiment, filter_string or "")


def check_pairs(pairs: list[Pair]) -> list[str]:
    """Refuse pairs trained on different data; return warnings (code versions differ, ...)."""
    if not pairs:
        raise HarnessError("nothing to compare: no baseline/augmented pairs found")
    for pair in pairs:
        check_comparable(pair.baseline, pair.augmented)
    # Across pairs only the seed may change the data: classes, sizes and test split must agree.
    ref = pairs[0].baseline.data.params
    for pair in pairs[1:]:
        p = pair.baseline.data.params
        differ = [k for k in ref if k.startswith("data.") and k not in ("data.seed", "data.n_train") and ref[k] != p.get(k)]
        if differ:
            raise HarnessError("the pipelines use different data configs and cannot be pooled: "
                               + "; ".join(f"{k} = {ref[k]} vs {p.get(k)}" for k in differ))
    warnings = []
    versions = {r.data.tags.get("harness.code_version") for pr in pairs for r in (pr.baseline, pr.augmented)}
    if len(versions) > 1:
        warnings.append(f"the runs come from {len(versions)} different code versions ({', '.join(sorted(map(str, versions)))})")
    return warnings


def predictions(run):
    import numpy as np
    from harness import tracking
    # A reused run holds no artifacts of its own: they are in the run it reused.
    path = tracking.download(run.data.tags.get("harness.reused_from", run.info.run_id), "predictions.csv")
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.int64).reshape(-1, 3)


def mcnemar(base_pred, aug_pred) -> tuple[int, int, float]:
    """Exact McNemar test on paired test predictions: (baseline-only correct, augmented-only
    correct, two-sided p), via scipy's binomial test on the discordant pairs."""
    from scipy.stats import binomtest
    if not (len(base_pred) == len(aug_pred) and (base_pred[:, :2] == aug_pred[:, :2]).all()):
        raise HarnessError("the two runs' predictions.csv do not cover the same test images")
    base_ok = base_pred[:, 2] == base_pred[:, 1]
    aug_ok = aug_pred[:, 2] == aug_pred[:, 1]
    b, c = int((base_ok & ~aug_ok).sum()), int((~base_ok & aug_ok).sum())
    return b, c, (binomtest(c, b + c, 0.5).pvalue if b + c else 1.0)


@dataclass
class Stat:
    label: str
    base: list[float]
    aug: list[float]
    percent: bool = False

    @property
    def deltas(self):
        import numpy as np
        return np.asarray(self.aug) - np.asarray(self.base)

    def tests(self) -> dict[str, float]:
        """Mean paired delta, its 95% CI, paired t-test and Wilcoxon signed-rank p-values."""
        import numpy as np
        from scipy import stats
        d = self.deltas
        out = {"delta_mean": float(d.mean()), "ci_low": float("nan"), "ci_high": float("nan"),
               "t_p": float("nan"), "wilcoxon_p": float("nan")}
        if len(d) < 2:
            return out
        if np.allclose(d, d[0]):  # no spread: the t statistic is undefined
            out.update(ci_low=float(d[0]), ci_high=float(d[0]), t_p=1.0 if d[0] == 0 else 0.0,
                       wilcoxon_p=1.0 if d[0] == 0 else float("nan"))
            return out
        t = stats.ttest_rel(self.aug, self.base)
        ci = t.confidence_interval(1 - ALPHA)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), t_p=float(t.pvalue))
        if np.any(d != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(self.aug, self.base).pvalue)
        return out


@dataclass
class SeedReport:
    seeds: list[str]
    stats: list[Stat]
    mcnemar: list[tuple[str, int, int, float]]  # seed, baseline-only correct, augmented-only correct, p
    share_gan: bool | None
    warnings: list[str]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def verdict(self) -> str:
        """In words, on test accuracy at alpha 0.05: the paired t-test across seeds when there are
        several, McNemar's test on the one pair's predictions when there is one."""
        acc = self.stats[0]
        if self.n >= 2:
            p, d = acc.tests()["t_p"], acc.tests()["delta_mean"]
            basis = f"paired t-test over {self.n} seeds, p = {p:.3g}"
        else:
            _, b, c, p = self.mcnemar[0]
            d = acc.deltas[0]
            basis = f"one seed only: McNemar test on the test predictions, p = {p:.3g}"
        if p < ALPHA:
            return f"significant {'gain' if d > 0 else 'loss'} ({basis})"
        return f"no significant difference ({basis})"

    def headline(self) -> dict[str, float]:
        import numpy as np
        out = {"study/n_seeds": self.n}
        for key, s in zip(("accuracy", "f1_weighted", "f1_macro"), self.stats):
            t = s.tests()
            out |= {f"baseline/{key}_mean": float(np.mean(s.base)), f"augmented/{key}_mean": float(np.mean(s.aug)),
                    f"delta/{key}": t["delta_mean"]}
            for k in ("ci_low", "ci_high", "t_p", "wilcoxon_p"):
                if t[k] == t[k]:  # MLflow refuses NaN in some stores; leave undefined tests out
                    out[f"delta/{key}_{k}"] = t[k]
        return out

    def to_json(self) -> dict:
        import numpy as np
        return {"seeds": self.seeds, "share_gan": self.share_gan, "verdict": self.verdict(), "warnings": self.warnings,
                "metrics": [{"metric": s.label, "baseline": s.base, "augmented": s.aug,
                             "baseline_mean": float(np.mean(s.base)), "augmented_mean": float(np.mean(s.aug)),
                             **s.tests()} for s in self.stats],
                "mcnemar": [{"seed": sd, "baseline_only_correct": b, "augmented_only_correct": c, "p": p}
                            for sd, b, c, p in self.mcnemar]}

    def markdown(self) -> str:
        import numpy as np

        def fmt(v, pct):
            return f"{100 * v:.2f}" if pct else f"{v:.4f}"

        def ms(vals, pct):
            sd = np.std(vals, ddof=1) if len(vals) > 1 else float("nan")
            return f"{fmt(np.mean(vals), pct)} ± {fmt(sd, pct)}" if len(vals) > 1 else fmt(vals[0], pct)

        gan = {True: "shared across seeds (trained once)", False: "trained per seed", None: "unknown"}[self.share_gan]
        lines = [f"Paired seeds: n = {self.n} ({', '.join(self.seeds)}); GAN {gan}.", "",
                 "| Metric | Baseline (mean ± std) | Augmented (mean ± std) | Delta mean [95% CI] | paired t p | Wilcoxon p |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for s in self.stats:
            t = s.tests()
            unit = " pts" if s.percent else ""
            ci = f" [{fmt(t['ci_low'], s.percent)}, {fmt(t['ci_high'], s.percent)}]" if t["ci_low"] == t["ci_low"] else ""
            p = lambda v: f"{v:.3g}" if v == v else "n/a"
            lines.append(f"| {s.label}{' (%)' if s.percent else ''} | {ms(s.base, s.percent)} | {ms(s.aug, s.percent)} | "
                         f"{'+' if t['delta_mean'] >= 0 else ''}{fmt(t['delta_mean'], s.percent)}{unit}{ci} | "
                         f"{p(t['t_p'])} | {p(t['wilcoxon_p'])} |")
        lines += ["", "McNemar test per seed (test predictions; exact binomial on discordant images):", "",
                  "| Seed | Baseline-only correct | Augmented-only correct | p |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {sd} | {b} | {c} | {p:.3g} |" for sd, b, c, p in self.mcnemar]
        lines += ["", f"**Verdict** (test accuracy, alpha {ALPHA}): {self.verdict()}."]
        if 2 <= self.n < 6:
            lines.append(f"Note: with {self.n} seeds the two-sided Wilcoxon test cannot reach p < 0.05 "
                         f"(smallest possible p = {2 / 2 ** self.n:.3g}).")
        lines += [f"Warning: {w}." for w in self.warnings]
        return "\n".join(lines) + "\n"


def seed_report(pairs: list[Pair], share_gan: bool | None = None) -> SeedReport:
    warnings = check_pairs(pairs)
    classes = classes_of(pairs[0].baseline)
    keys = [("accuracy", "Accuracy", True), ("f1_weighted", "F1 (weighted)", False), ("f1_macro", "F1 (macro)", False)]
    keys += [(f"{c}/f1", f"{c} F1", False) for c in classes]
    stats = [Stat(label, [p.baseline.data.metrics[f"test/{k}"] for p in pairs],
                  [p.augmented.data.metrics[f"test/{k}"] for p in pairs], pct) for k, label, pct in keys]
    tests = [(p.seed, *mcnemar(predictions(p.baseline), predictions(p.augmented))) for p in pairs]
    if share_gan is None:
        parents = [p.augmented.data.tags.get("mlflow.parentRunId") for p in pairs]
        flags = {get_run(r).data.params.get("pipeline.gan_shared") if r else None for r in parents}
        share_gan = {"True"} == flags if flags <= {"True", "False"} else None
    return SeedReport([p.seed for p in pairs], stats, tests, share_gan, warnings)


def seed_figure(report: SeedReport):
    """Per metric: baseline and augmented means with their seeds as dots; the delta with its CI."""
    import numpy as np

    from harness.metrics import subplots
    fig, (ax, ax_d) = subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    labels = [s.label for s in report.stats]
    x = np.arange(len(labels))
    for off, arm, color in ((-0.2, "base", "tab:blue"), (0.2, "aug", "tab:orange")):
        vals = [getattr(s, arm) for s in report.stats]
        ax.bar(x + off, [np.mean(v) for v in vals], 0.4, color=color, alpha=0.6,
               label="baseline" if arm == "base" else "augmented")
        for i, v in enumerate(vals):
            ax.scatter(np.full(len(v), x[i] + off), v, color=color, s=12, zorder=3)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    lo = min(min(s.base + s.aug) for s in report.stats)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_title(f"test metrics over {report.n} seeds (dots: seeds)")
    ax.legend(loc="lower right")
    t = [s.tests() for s in report.stats]
    means = [d["delta_mean"] for d in t]
    err = np.array([[m - d["ci_low"], d["ci_high"] - m] if d["ci_low"] == d["ci_low"] else [0, 0]
                    for m, d in zip(means, t)]).T
    ax_d.errorbar(means, x, xerr=err, fmt="o", capsize=4, color="k")
    ax_d.axvline(0, color="gray", linestyle="--")
    ax_d.set_yticks(x, labels)
    ax_d.invert_yaxis()
    ax_d.set_xlabel("augmented - baseline (mean, 95% CI)")
    ax_d.set_title(report.verdict().split(" (")[0])
    fig.tight_layout()
    return fig
