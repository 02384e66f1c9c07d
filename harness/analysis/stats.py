"""Is the delta real? Paired statistics over seeds: mean paired delta with its 95% CI, paired t,
Wilcoxon signed-rank, exact McNemar per pair, and a verdict in words."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.analysis import plateau
from harness.analysis.runs import Pair, check_pairs, classes_of, get_run, predictions
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
    """Paired seeds' statistics. `stats` compare the synthetic arm with its reference: the control
    where the pipelines have one (`controlled`: the images' effect, the headline), else the baseline
    (recipe not controlled); with a control, `recipe` (control - baseline) and `total` (synthetic -
    baseline) follow for the headline metrics."""
    seeds: list[str]
    stats: list[Stat]
    mcnemar: list[tuple[str, int, int, float]]  # seed, reference-only correct, synthetic-only correct, p
    share_generator: bool | None
    warnings: list[str]
    margin: float = 1.0  # points: the equivalence margin (MARGIN)
    controlled: bool = False
    recipe: list[Stat] = field(default_factory=list)
    total: list[Stat] = field(default_factory=list)
    plateau: str = ""  # how far the baseline is from its plateau, where its preset measured it (analysis/plateau.py)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def reference(self) -> str:
        return "control" if self.controlled else "baseline"

    @property
    def effect(self) -> str:
        """What `stats` measure, in words."""
        return "synthetic - control (the images' effect)" if self.controlled else \
            "synthetic - baseline (recipe not controlled)"

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
            eq = tost(acc.deltas, self.margin)
            basis += f"; TOST against ±{self.margin:g} points, p = {eq['tost_p']:.3g}, 90% CI " \
                     f"[{eq['ci90_low']:+.2f}, {eq['ci90_high']:+.2f}]"
        else:
            _, b, c, p = self.mcnemar[0]
            d, eq = acc.deltas[0], {"tost_p": float("nan")}
            basis = f"one seed only: McNemar test on the test predictions, p = {p:.3g}; no equivalence test"
        return f"{four_way(p, d, eq['tost_p'], self.margin)} ({basis})"

    def headline(self) -> dict[str, float]:
        """Metrics of the seeds run: images/* (synthetic - control) where controlled, recipe/* (control -
        baseline), delta/* (synthetic - baseline, its meaning since the first version), arms' means."""
        import numpy as np
        out = {"seeds/count": self.n}
        groups = [("images", self.stats), ("recipe", self.recipe), ("delta", self.total)] if self.controlled \
            else [("delta", self.stats)]
        for prefix, stats in groups:
            for key, s in zip(("accuracy", "f1_weighted", "f1_macro"), stats):
                t = s.tests()
                out[f"{prefix}/{key}"] = t["delta_mean"]
                for k in ("ci_low", "ci_high", "t_p", "wilcoxon_p"):
                    if t[k] == t[k]:  # MLflow refuses NaN in some stores; leave undefined tests out
                        out[f"{prefix}/{key}_{k}"] = t[k]
        for key, s in zip(("accuracy", "f1_weighted", "f1_macro"), self.total if self.controlled else self.stats):
            out |= {f"baseline/{key}_mean": float(np.mean(s.base)), f"synthetic/{key}_mean": float(np.mean(s.aug))}
        if self.controlled:
            out |= {f"control/{key}_mean": float(np.mean(s.base))
                    for key, s in zip(("accuracy", "f1_weighted", "f1_macro"), self.stats)}
        return out

    def to_json(self) -> dict:
        import numpy as np
        ref = self.reference

        def one(s: Stat, a: str, b: str) -> dict:
            return {"metric": s.label, a: s.base, b: s.aug, f"{a}_mean": float(np.mean(s.base)),
                    f"{b}_mean": float(np.mean(s.aug)), **s.tests()}
        return {"seeds": self.seeds, "share_generator": self.share_generator, "verdict": self.verdict(),
                "controlled": self.controlled, "effect": self.effect, "warnings": self.warnings,
                "plateau": self.plateau,
                "metrics": [one(s, ref, "synthetic") for s in self.stats],
                "recipe": [one(s, "baseline", "control") for s in self.recipe],
                "synthetic_minus_baseline": [one(s, "baseline", "synthetic") for s in self.total],
                "mcnemar": [{"seed": sd, f"{ref}_only_correct": b, "synthetic_only_correct": c, "p": p}
                            for sd, b, c, p in self.mcnemar]}


def distinct(pairs: list[Pair]) -> tuple[list[Pair], int]:
    """One pair per computation: a fully reused pipeline is the same pair again (its runs point at
    the runs they reused), and counting it twice would shrink every p-value."""
    seen, out = set(), []
    for p in pairs:
        key = tuple(r.data.tags.get("harness.reused_from", r.info.run_id) for r in (p.baseline, p.synthetic, p.control)
                    if r is not None)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out, len(pairs) - len(out)


def seed_report(client, pairs: list[Pair], share_generator: bool | None = None, margin: float = 1.0) -> SeedReport:
    pairs, dropped = distinct(pairs)
    warnings = check_pairs(pairs)
    if dropped:
        warnings.append(f"{dropped} pair(s) repeat a pair already counted (reused runs of the same computation) "
                        "and were left out")
    classes = classes_of(pairs[0].baseline)
    controlled = pairs[0].control is not None  # all or none: check_pairs refuses a mixture
    keys = [("accuracy", "Accuracy", True), ("f1_weighted", "F1 (weighted)", False), ("f1_macro", "F1 (macro)", False)]

    def arm(run_of, k):
        return [run_of(p).data.metrics[f"test/{k}"] for p in pairs]

    def stats_of(a, b, keys):
        return [Stat(label, arm(a, k), arm(b, k), pct) for k, label, pct in keys]
    stats = stats_of(lambda p: p.reference, lambda p: p.synthetic, keys + [(f"{c}/f1", f"{c} F1", False) for c in classes])
    recipe = stats_of(lambda p: p.baseline, lambda p: p.control, keys) if controlled else []
    total = stats_of(lambda p: p.baseline, lambda p: p.synthetic, keys) if controlled else []
    tests = [(p.seed, *mcnemar(predictions(client, p.reference), predictions(client, p.synthetic))) for p in pairs]
    parents = [p.synthetic.data.tags.get("mlflow.parentRunId") for p in pairs]
    parents = [get_run(client, r).data.params if r else {} for r in parents]
    if share_generator is None:
        flags = {params.get("pipeline.generator_shared") for params in parents}
        share_generator = {"True"} == flags if flags <= {"True", "False"} else None
    budget = {plateau.line(params) for params in parents}
    return SeedReport([p.seed for p in pairs], stats, tests, share_generator, warnings, margin, controlled, recipe, total,
                      " ".join(sorted(b for b in budget if b)))


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


def half_width(deltas) -> float:
    """Half the width of the paired deltas' 95% t interval (their units); inf below 2 values."""
    import numpy as np
    from scipy import stats
    d = np.asarray(deltas, dtype=float)
    if len(d) < 2:
        return float("inf")
    return float(stats.t.ppf(1 - ALPHA / 2, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5)


def seeds_needed(first, halfwidth: float, max_seeds: int) -> tuple[int, str]:
    """(how many seeds a cell gets, why), from the paired deltas of its first seeds (accuracy
    fractions) and the CI half-width wanted (points): Stein's two-stage rule. A cell whose first
    seeds' 95% CI is narrow enough keeps them; another gets the seeds its first-stage spread says
    an interval of that half-width needs, up to `max_seeds`, once. The rule reads the spread only,
    never the delta or a p-value, so it does not inflate the false-positive rate the way stopping
    on significance does; and since the number depends on the first seeds alone, the interval built
    on their spread (`two_stage`) has exactly 95% coverage. Re-deciding after every round on the
    newest spread would not (a simulation gave 92-94% coverage and 7-9% false positives over three
    null cells with Holm, against 95% and 5%: it stops when the spread happens to look small)."""
    import math

    import numpy as np
    from scipy import stats
    n0 = len(first)
    if n0 < 2:
        raise HarnessError("a CI half-width target needs at least 2 seeds to measure the spread (--seeds 2 or more)")
    if 100 * half_width(first) <= halfwidth:
        return n0, "half-width reached"
    sd = 100 * float(np.std(first, ddof=1))
    m = max(n0 + 1, math.ceil((stats.t.ppf(1 - ALPHA / 2, n0 - 1) * sd / halfwidth) ** 2))
    return (m, "half-width reached") if m <= max_seeds else (max(max_seeds, n0), "max seeds")


def two_stage(deltas, n0: int) -> dict[str, float]:
    """Mean paired delta, 95% CI and p of a cell whose seed count came from its first `n0` seeds'
    spread (`seeds_needed`): the standard error uses that first-stage SD with n0 - 1 degrees of
    freedom (Stein 1945), which makes the interval exact whatever the count it chose. With no seeds
    added it is the ordinary paired t-test."""
    import numpy as np
    from scipy import stats
    d = np.asarray(deltas, dtype=float)
    se = float(np.std(d[:n0], ddof=1)) / len(d) ** 0.5
    mean = float(d.mean())
    if se == 0:
        return {"delta_mean": mean, "ci_low": mean, "ci_high": mean, "t_p": float("nan")}
    half = float(stats.t.ppf(1 - ALPHA / 2, n0 - 1)) * se
    return {"delta_mean": mean, "ci_low": mean - half, "ci_high": mean + half,
            "t_p": float(2 * stats.t.sf(abs(mean) / se, n0 - 1))}


@dataclass(frozen=True)
class VarianceSplit:
    """The paired delta's variance split between the K generators and the seeds that share one (a
    one-way random-effects analysis of variance, the generator as the group), with the interval for a
    new generator trained the same way."""
    k: int
    between: float  # variance of the delta from one generator to the next (points^2), method of moments, >= 0
    within: float  # variance from seed to seed under one generator (points^2)
    share: float  # between / (between + within)
    mean: float  # mean of the generators' mean deltas (points)
    new_low: float  # 95% interval for a new generator: the K generator means as the sample (K - 1 df)
    new_high: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


def variance_split(deltas, generators) -> VarianceSplit | None:
    """`deltas` (points) grouped by `generators` (which generator each seed used); None for fewer than
    two generators, or a generator with a single seed only (no within-generator spread to measure)."""
    import numpy as np
    from scipy import stats
    d, g = np.asarray(deltas, dtype=float), np.asarray(generators)
    groups = [d[g == k] for k in np.unique(g)]
    k, n = len(groups), len(d)
    if k < 2 or n <= k:
        return None
    means = np.array([x.mean() for x in groups])
    sizes = np.array([len(x) for x in groups])
    msb = float((sizes * (means - d.mean()) ** 2).sum() / (k - 1))
    msw = float(sum(((x - x.mean()) ** 2).sum() for x in groups) / (n - k))
    n0 = (n - (sizes ** 2).sum() / n) / (k - 1)  # the group size of an unbalanced design (Searle et al.)
    between = max(0.0, (msb - msw) / n0)
    half = float(stats.t.ppf(1 - ALPHA / 2, k - 1) * means.std(ddof=1) / k ** 0.5)
    total = between + msw
    return VarianceSplit(k, between, msw, between / total if total > 0 else 0.0, float(means.mean()),
                         float(means.mean()) - half, float(means.mean()) + half)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error rate), NaNs left as they are."""
    idx = sorted((i for i, p in enumerate(pvalues) if p == p), key=lambda i: pvalues[i])
    out, running = list(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Design:
    """How a grid cell's seeds were chosen and its generators shared, for its report row."""
    first: tuple[int, ...] = ()  # the seeds planned up front (the first stage when a CI half-width is set)
    halfwidth: float | None = None  # the 95% CI half-width wanted (points); None: the seeds are fixed
    max_seeds: int = 0
    k: int = 0  # generators the seeds share, seed s using generator s mod k; 0: the kind trains none


def summarize(reports: list[tuple[str, object]], designs: dict[str, Design] | None = None,
              margin: float = 1.0, family=None) -> list[dict]:
    """One row per cell from its SeedReport (None: no finished item): arms' accuracy mean +- std, the
    paired delta's tests (two-stage where a CI half-width target added seeds), its CI half-width and the
    MDE at the seeds used, why its seeds stopped, the generators' variance split (K >= 2), and the
    t-test p Holm-adjusted across the cells that have one; `family(cell)`: the cells Holm adjusts
    together (default: all)."""
    import numpy as np
    rows = []
    for label, rep in reports:
        design = (designs or {}).get(label, Design())
        if rep is None:
            rows.append({"cell": label, "n": 0, "k": design.k})
            continue
        acc = rep.stats[0]
        spread = (lambda v: float(np.std(v, ddof=1)) if rep.n > 1 else 0.0)  # noqa: E731
        base = rep.total[0].base if rep.controlled else acc.base
        row = {"cell": label, "n": rep.n, "seeds": [int(s) for s in rep.seeds], "controlled": rep.controlled,
               "baseline_mean": float(np.mean(base)), "baseline_std": spread(base),
               "synthetic_mean": float(np.mean(acc.aug)), "synthetic_std": spread(acc.aug), **acc.tests(),
               "verdict": rep.verdict(), "k": design.k}
        if rep.controlled:  # the delta columns are the images' effect; the recipe's and the total beside them
            recipe, total = rep.recipe[0].tests(), rep.total[0].tests()
            row |= {"control_mean": float(np.mean(acc.base)), "control_std": spread(acc.base),
                    "recipe": {k: recipe[k] for k in ("delta_mean", "ci_low", "ci_high", "t_p")},
                    "synthetic_minus_baseline": {k: total[k] for k in ("delta_mean", "ci_low", "ci_high", "t_p")}}
        by_seed = dict(zip(row["seeds"], acc.deltas.tolist()))
        first = [by_seed[s] for s in design.first if s in by_seed]
        later = [d for s, d in by_seed.items() if s not in design.first]
        if design.halfwidth is not None and len(first) >= 2:
            target, why = seeds_needed(first, design.halfwidth, design.max_seeds)
            row["target_seeds"] = target
            row["stopped"] = why if rep.n >= target else f"{target - rep.n} more seed(s) to come"
            if later:
                row.update(two_stage(first + later, len(first)), interval="two-stage (Stein)")
        row.update(tost(first + later, margin, n0=len(first)) if "interval" in row else tost(acc.deltas, margin))
        if rep.n >= 2:
            row["half_width"] = (row["ci_high"] - row["ci_low"]) / 2
            row["mde_points"] = mde(rep.n, sd=max(100 * spread(acc.deltas), 1e-6))
        if design.k >= 2:
            split = variance_split([100 * by_seed[s] for s in row["seeds"]], [s % design.k for s in row["seeds"]])
            row["variance"] = split.to_json() if split else None
        rows.append(row)
    families: dict[str, list[dict]] = {}
    for row in rows:
        families.setdefault(family(row["cell"]) if family else "", []).append(row)
    for members in families.values():
        _verdicts(members, margin)
    return rows


def _verdicts(rows: list[dict], margin: float) -> None:
    """Holm over one family of cells, and each one's four-way verdict."""
    tested = sum(1 for r in rows if r["n"] >= 2 and not math.isnan(r.get("t_p", float("nan"))))
    for row, p in zip(rows, holm([r.get("t_p", float("nan")) for r in rows])):
        row["holm_p"] = p
        if row["n"] >= 2 and not math.isnan(p):
            # Several cells tested at once: the difference verdict is the Holm-adjusted one, so that
            # one lucky cell among many does not read as a finding. Equivalence is judged per cell
            # (EQUIVALENCE_RULE).
            test = "two-stage t-test" if "interval" in row else "paired t-test"
            basis = (f"{test} over {row['n']} seeds, p = {row['t_p']:.3g}" +
                     (f", Holm-adjusted over {tested} cells {p:.3g}" if tested > 1 else "") +
                     f"; TOST ±{margin:g}, p = {row['tost_p']:.3g}")
            row["verdict_kind"] = four_way(p, row["delta_mean"], row["tost_p"], margin)
            row["verdict"] = f"{row['verdict_kind']} ({basis})"


EQUIVALENCE_RULE = ("equivalence is judged per cell (two one-sided tests at 5% each, the 90% CI inside the margin), "
                    "not Holm-adjusted: it is a claim about that cell alone, and an adjustment that guards a family "
                    "against one false difference would make equivalence harder to show the more cells a grid has")


# ---------------------------------------------------------------------------------------------
# Equivalence: "no difference" that means something

MARGIN = 1.0  # points: the default equivalence margin, a delta no user would act on


def check_margin(margin: float | None) -> float | None:
    """--margin, checked where it enters: a finite number of points > 0 (None: the default)."""
    if margin is not None and not (math.isfinite(margin) and 0 < margin < 100):
        # Accuracy spans 100 points: a margin as wide calls every cell "equivalent", whatever it measured.
        raise HarnessError(f"--margin takes points between 0 and 100 (accuracy spans 100; e.g. 1.0), got {margin:g}")
    return margin


def tost(deltas, margin: float, n0: int | None = None) -> dict[str, float]:
    """Two one-sided tests (Schuirmann 1987) that the mean paired delta (accuracy fractions) lies
    inside +-`margin` (points): both nulls (delta <= -margin, delta >= +margin) rejected at ALPHA
    is the 90% CI inside the margin. `n0`: a two-stage cell's first seeds, whose SD and n0 - 1
    degrees of freedom the standard error uses (`two_stage`). Returns the 90% CI and the TOST p."""
    import numpy as np
    from scipy import stats
    d = 100 * np.asarray(deltas, dtype=float)
    n0 = n0 or len(d)
    out = {"margin": margin, "tost_p": float("nan"), "ci90_low": float("nan"), "ci90_high": float("nan")}
    if n0 < 2:
        return out
    mean, se = float(d.mean()), float(np.std(d[:n0], ddof=1)) / len(d) ** 0.5
    if se == 0:
        return {**out, "tost_p": 0.0 if abs(mean) < margin else 1.0, "ci90_low": mean, "ci90_high": mean}
    df = n0 - 1
    p = max(float(stats.t.sf((mean + margin) / se, df)), float(stats.t.cdf((mean - margin) / se, df)))
    half = float(stats.t.ppf(1 - ALPHA, df)) * se
    return {**out, "tost_p": p, "ci90_low": mean - half, "ci90_high": mean + half}


def tost_power(delta: float, sd: float, n: int, margin: float) -> float:
    """The chance that TOST calls a cell of true mean delta `delta` equivalent within +-`margin`
    (all in points) with n seeds and a paired-delta SD `sd`: P(both one-sided tests reject), from
    the joint law of the mean and the SD (numerical integration over the SD's chi distribution)."""
    import numpy as np
    from scipy import integrate, stats
    df, crit = n - 1, stats.t.ppf(1 - ALPHA, n - 1)

    def given_s(s):  # the mean must lie within margin - crit * s / sqrt(n) of zero
        half = margin - crit * s / n ** 0.5
        if half <= 0:
            return 0.0
        se = sd / n ** 0.5
        return stats.norm.cdf((half - delta) / se) - stats.norm.cdf((-half - delta) / se)
    dens = lambda s: stats.chi.pdf(s * np.sqrt(df) / sd, df) * np.sqrt(df) / sd  # noqa: E731 (the SD's density)
    return float(integrate.quad(lambda s: given_s(s) * dens(s), 0, margin * n ** 0.5 / crit, limit=200)[0])


def four_way(p: float, delta: float, tost_p: float, margin: float) -> str:
    """significant gain | significant loss | equivalent within +-m | inconclusive: the difference
    test first (its p Holm-adjusted where a grid tests several cells), then equivalence."""
    if p == p and p < ALPHA:
        return f"significant {'gain' if delta > 0 else 'loss'}"
    if tost_p == tost_p and tost_p < ALPHA:
        return f"equivalent within ±{margin:g} points"
    return "inconclusive"
