"""Is the delta real? Paired statistics over seeds: mean paired delta with its 95% CI, paired t,
Wilcoxon signed-rank, exact McNemar per pair, and a verdict in words."""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.compare.runs import Pair, check_pairs, classes_of, get_run, predictions
from harness.errors import HarnessError

ALPHA = 0.05


def mcnemar(base_pred, aug_pred) -> tuple[int, int, float]:
    """Exact McNemar test on paired test predictions: (baseline-only correct, synthetic-only
    correct, two-sided p), via scipy's binomial test on the discordant pairs."""
    from scipy.stats import binomtest
    if not (len(base_pred) == len(aug_pred) and (base_pred[:, :2] == aug_pred[:, :2]).all()):
        raise HarnessError("the two runs' predictions tables do not cover the same test images")
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
        if np.allclose(d, d[0]):
            # No spread: the t statistic is undefined, and a p of 0 would read as certainty where
            # there is nothing to test. The verdict says so instead (SeedReport.verdict).
            out.update(ci_low=float(d[0]), ci_high=float(d[0]), no_spread=True)
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
    mcnemar: list[tuple[str, int, int, float]]  # seed, baseline-only correct, synthetic-only correct, p
    share_gan: bool | None
    warnings: list[str]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def verdict(self) -> str:
        """In words, on test accuracy at alpha 0.05: the paired t-test across seeds when there are
        several, McNemar's test on the one pair's predictions when there is one."""
        acc = self.stats[0]
        if self.n >= 2 and acc.tests().get("no_spread"):
            return (f"no test possible: every one of the {self.n} pairs has the same delta "
                    f"({100 * acc.deltas[0]:+.2f} points), so there is no spread to test against")
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
            out |= {f"baseline/{key}_mean": float(np.mean(s.base)), f"synthetic/{key}_mean": float(np.mean(s.aug)),
                    f"delta/{key}": t["delta_mean"]}
            for k in ("ci_low", "ci_high", "t_p", "wilcoxon_p"):
                if t[k] == t[k]:  # MLflow refuses NaN in some stores; leave undefined tests out
                    out[f"delta/{key}_{k}"] = t[k]
        return out

    def to_json(self) -> dict:
        import numpy as np
        return {"seeds": self.seeds, "share_gan": self.share_gan, "verdict": self.verdict(), "warnings": self.warnings,
                "metrics": [{"metric": s.label, "baseline": s.base, "synthetic": s.aug,
                             "baseline_mean": float(np.mean(s.base)), "synthetic_mean": float(np.mean(s.aug)),
                             **s.tests()} for s in self.stats],
                "mcnemar": [{"seed": sd, "baseline_only_correct": b, "synthetic_only_correct": c, "p": p}
                            for sd, b, c, p in self.mcnemar]}


def distinct(pairs: list[Pair]) -> tuple[list[Pair], int]:
    """One pair per computation: a fully reused pipeline is the same pair again (its runs point at
    the runs they reused), and counting it twice would shrink every p-value."""
    seen, out = set(), []
    for p in pairs:
        key = tuple(r.data.tags.get("harness.reused_from", r.info.run_id) for r in (p.baseline, p.synthetic))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out, len(pairs) - len(out)


def seed_report(client, pairs: list[Pair], share_gan: bool | None = None) -> SeedReport:
    pairs, dropped = distinct(pairs)
    warnings = check_pairs(pairs)
    if dropped:
        warnings.append(f"{dropped} pair(s) repeat a pair already counted (reused runs of the same computation) "
                        "and were left out")
    classes = classes_of(pairs[0].baseline)
    keys = [("accuracy", "Accuracy", True), ("f1_weighted", "F1 (weighted)", False), ("f1_macro", "F1 (macro)", False)]
    keys += [(f"{c}/f1", f"{c} F1", False) for c in classes]
    stats = [Stat(label, [p.baseline.data.metrics[f"test/{k}"] for p in pairs],
                  [p.synthetic.data.metrics[f"test/{k}"] for p in pairs], pct) for k, label, pct in keys]
    tests = [(p.seed, *mcnemar(predictions(client, p.baseline), predictions(client, p.synthetic))) for p in pairs]
    if share_gan is None:
        parents = [p.synthetic.data.tags.get("mlflow.parentRunId") for p in pairs]
        flags = {get_run(client, r).data.params.get("pipeline.generator_shared") if r else None for r in parents}
        share_gan = {"True"} == flags if flags <= {"True", "False"} else None
    return SeedReport([p.seed for p in pairs], stats, tests, share_gan, warnings)


def mde(n: int, sd: float = 1.5, power: float = 0.8, alpha: float = 0.05) -> float:
    """Minimum detectable mean paired delta (points) of a two-sided paired t-test with n seeds, for a
    paired-delta standard deviation `sd` (points; ~1.5 measured at 1000 images per class)."""
    from scipy import optimize, stats
    if n < 2:
        return float("inf")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(d):
        nc = d / sd * n ** 0.5
        achieved = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        return (1.0 if achieved != achieved else achieved) - power  # far tails: NaN means all the power
    return float(optimize.brentq(shortfall, 1e-6, 50 * sd))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error rate), NaNs left as they are."""
    idx = sorted((i for i, p in enumerate(pvalues) if p == p), key=lambda i: pvalues[i])
    out, running = list(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


def summarize(reports: list[tuple[str, object]]) -> list[dict]:
    """One row per cell from its SeedReport (None: no finished item): arms' accuracy mean +- std, the
    paired delta's tests, and the t-test p Holm-adjusted across the cells that have one."""
    import numpy as np
    rows = []
    for label, rep in reports:
        if rep is None:
            rows.append({"cell": label, "n": 0})
            continue
        acc = rep.stats[0]
        spread = (lambda v: float(np.std(v, ddof=1)) if rep.n > 1 else 0.0)  # noqa: E731
        rows.append({"cell": label, "n": rep.n, "baseline_mean": float(np.mean(acc.base)),
                     "baseline_std": spread(acc.base), "synthetic_mean": float(np.mean(acc.aug)),
                     "synthetic_std": spread(acc.aug), **acc.tests(), "verdict": rep.verdict()})
    tested = sum(1 for r in rows if r["n"] >= 2 and not math.isnan(r.get("t_p", float("nan"))))
    for row, p in zip(rows, holm([r.get("t_p", float("nan")) for r in rows])):
        row["holm_p"] = p
        if row["n"] >= 2 and not math.isnan(p) and tested > 1:
            # Several cells tested at once: the verdict is the Holm-adjusted one, so that one lucky
            # cell among many does not read as a finding.
            basis = f"paired t-test over {row['n']} seeds, p = {row['t_p']:.3g}, Holm-adjusted over {tested} cells {p:.3g}"
            row["verdict"] = (f"significant {'gain' if row['delta_mean'] > 0 else 'loss'} ({basis})" if p < 0.05
                              else f"no significant difference ({basis})")
    return rows
