"""Comparisons for people: the reference's table (metric, baseline, synthetic, difference), the
multi-seed report in Markdown, and their figures."""
from __future__ import annotations

from harness.compare.stats import ALPHA, EQUIVALENCE_RULE, SeedReport

HEADLINE = (("accuracy", "Accuracy"), ("f1_weighted", "F1 (weighted)"), ("f1_macro", "F1 (macro)"))
PER_CLASS = ("precision", "recall", "f1")


def rows(base: dict[str, float], aug: dict[str, float], classes) -> list[tuple[str, str, float, float]]:
    """(metric key, label, baseline, synthetic) for every test metric both runs have."""
    out = [(k, label, base[f"test/{k}"], aug[f"test/{k}"]) for k, label in HEADLINE]
    for name in classes:
        for stat in PER_CLASS:
            key = f"{name}/{stat}"
            out.append((key, f"{name} {stat.replace('f1', 'F1')}", base[f"test/{key}"], aug[f"test/{key}"]))
    return out


def delta_metrics(table) -> dict[str, float]:
    return {f"delta/{key}": a - b for key, _, b, a in table}


def markdown(table) -> str:
    lines = ["| Metric | Baseline | Synthetic | Difference |", "| --- | ---: | ---: | ---: |"]
    for key, label, b, a in table:
        if key == "accuracy":  # the reference reports accuracy in percent, its delta in points
            lines.append(f"| {label} | {100 * b:.2f}% | {100 * a:.2f}% | {100 * (a - b):+.2f} pts |")
        else:
            lines.append(f"| {label} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
    return "\n".join(lines) + "\n"


def figure(table, classes):
    import numpy as np

    from harness.figures import subplots, tight
    labels = ["overall"] + list(classes)
    base = [dict((k, b) for k, _, b, _ in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    aug = [dict((k, a) for k, _, _, a in table)[key] for key in ["f1_weighted"] + [f"{c}/f1" for c in classes]]
    x = np.arange(len(labels))
    fig, ax = subplots(figsize=(1.8 + 1.5 * len(labels), 3.8))
    ax.bar(x - 0.2, base, 0.4, label="baseline")
    ax.bar(x + 0.2, aug, 0.4, label="synthetic")
    for i, (b, a) in enumerate(zip(base, aug)):
        ax.annotate(f"{a - b:+.3f}", (i, max(a, b)), textcoords="offset points", xytext=(0, 4), ha="center",
                    color="green" if a >= b else "red")
    ax.set_xticks(x, labels)
    ax.set_ylabel("F1 (overall: weighted)")
    ax.set_ylim(min(base + aug) - 0.1, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("baseline vs synthetic, test F1")
    tight(fig)
    return fig


def report_markdown(report: SeedReport) -> str:
    """The multi-seed report: per arm mean ± std, paired delta with CI and tests, McNemar, verdict."""
    import numpy as np

    def fmt(v, pct):
        return f"{100 * v:.2f}" if pct else f"{v:.4f}"

    def ms(vals, pct):
        sd = np.std(vals, ddof=1) if len(vals) > 1 else float("nan")
        return f"{fmt(np.mean(vals), pct)} ± {fmt(sd, pct)}" if len(vals) > 1 else fmt(vals[0], pct)

    gan = {True: "shared across seeds (trained once)", False: "trained per seed", None: "unknown"}[report.share_generator]
    lines = [f"Paired seeds: n = {report.n} ({', '.join(report.seeds)}); generator {gan}.", "",
             "| Metric | Baseline (mean ± std) | Synthetic (mean ± std) | Delta mean [95% CI] | paired t p | Wilcoxon p |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in report.stats:
        t = s.tests()
        unit = " pts" if s.percent else ""
        ci = f" [{fmt(t['ci_low'], s.percent)}, {fmt(t['ci_high'], s.percent)}]" if t["ci_low"] == t["ci_low"] else ""
        p = lambda v: f"{v:.3g}" if v == v else "n/a"
        lines.append(f"| {s.label}{' (%)' if s.percent else ''} | {ms(s.base, s.percent)} | {ms(s.aug, s.percent)} | "
                     f"{'+' if t['delta_mean'] >= 0 else ''}{fmt(t['delta_mean'], s.percent)}{unit}{ci} | "
                     f"{p(t['t_p'])} | {p(t['wilcoxon_p'])} |")
    lines += ["", "McNemar test per seed (test predictions; exact binomial on discordant images):", "",
              "| Seed | Baseline-only correct | Synthetic-only correct | p |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {sd} | {b} | {c} | {p:.3g} |" for sd, b, c, p in report.mcnemar]
    lines += ["", f"**Verdict** (test accuracy, alpha {ALPHA}): {report.verdict()}."]
    if 2 <= report.n < 6:
        lines.append(f"Note: with {report.n} seeds the two-sided Wilcoxon test cannot reach p < 0.05 "
                     f"(smallest possible p = {2 / 2 ** report.n:.3g}).")
    lines += [f"Warning: {w}." for w in report.warnings]
    return "\n".join(lines) + "\n"


def seed_figure(report: SeedReport):
    """Per metric: baseline and synthetic means with their seeds as dots; the delta with its CI."""
    import numpy as np

    from harness.figures import subplots, tight
    fig, (ax, ax_d) = subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    labels = [s.label for s in report.stats]
    x = np.arange(len(labels))
    for off, arm, color in ((-0.2, "base", "tab:blue"), (0.2, "aug", "tab:orange")):
        vals = [getattr(s, arm) for s in report.stats]
        ax.bar(x + off, [np.mean(v) for v in vals], 0.4, color=color, alpha=0.6,
               label="baseline" if arm == "base" else "synthetic")
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
    ax_d.set_xlabel("synthetic - baseline (mean, 95% CI)")
    ax_d.set_title(report.verdict().split(" (")[0])
    tight(fig)
    return fig


def grid_markdown(study_name: str, n_cells: int, seeds: list[int], mde_points: float | None,
                  rows: list[dict], halfwidth: float | None = None, max_seeds: int | None = None,
                  margin: float = 1.0) -> str:
    """The grid report's tables: per cell the arms' mean +- std, the paired delta [95% CI], t p, Holm p
    and verdict; then how each cell's seeds were spent: the CI half-width and MDE at the seeds used,
    why they stopped, and with K >= 2 generators the delta's variance split between generators and
    the interval for a new generator (rows from compare.stats.summarize)."""
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    f = lambda v, spec: "" if v is None or v != v else format(v, spec)  # noqa: E731
    rule = (f"; seeds per cell until the 95% CI half-width is at most {halfwidth:g} points, at most {max_seeds} "
            "(Stein's two-stage rule: the count comes from the first seeds' spread, never from the delta or a "
            "p-value, so stopping does not inflate false positives; grown cells' CIs and p use that first-stage "
            "spread)") if halfwidth is not None else ""
    lines = [f"grid `{study_name}`: {n_cells} cells, first seeds {', '.join(map(str, seeds))}{rule}; minimum "
             f"detectable effect at the first seeds (80% power, paired-delta SD 1.5 points): "
             f"{mde_points or float('nan'):.2f} points. Verdicts: significant gain or loss (Holm-adjusted "
             f"paired t-test), equivalent within ±{margin:g} points (the margin; {EQUIVALENCE_RULE}), or "
             "inconclusive (neither: the data cannot tell)\n",
             "| cell | n | baseline % | synthetic % | delta [95% CI] | t p | Holm p | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['cell']} | 0 | | | | | | no finished item |")
            continue
        lines.append(f"| {r['cell']} | {r['n']} | {pct(r['baseline_mean'])} ± {pct(r['baseline_std'])} | "
                     f"{pct(r['synthetic_mean'])} ± {pct(r['synthetic_std'])} | {100 * r['delta_mean']:+.2f} "
                     f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] | {r['t_p']:.3g} | {r['holm_p']:.3g} | "
                     f"{r['verdict']} |")
    lines += ["", "| cell | seeds | ± half-width (points) | MDE at these seeds (points) | stopped | K | "
                  "between-generator share | delta for a new generator [95% CI] |",
              "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        if not r["n"]:
            continue
        split = r.get("variance")
        k = r.get("k", 0)
        share = f"{100 * split['share']:.0f}%" if split else ("" if k < 2 else "not measurable")
        new = (f"{split['mean']:+.2f} [{split['new_low']:+.2f}, {split['new_high']:+.2f}] ({split['k'] - 1} df)"
               if split else "")
        half = r.get("half_width")
        lines.append(f"| {r['cell']} | {', '.join(map(str, r['seeds']))} | {f(None if half is None else 100 * half, '.2f')} | "
                     f"{f(r.get('mde_points'), '.2f')} | {r.get('stopped', 'fixed count')} | "
                     f"{k if k else 'n/a'} | {share} | {new} |")
    priced = [r for r in rows if r.get("worth_text")]
    if priced:
        replayed = any(r["worth"].get("rungs", [None])[0] == 0 for r in priced)
        start = ("it starts at the replay control (the training images themselves through the same recipe: "
                 "what the recipe alone does), and a cell below it is worth less than nothing" if replayed else
                 "it starts at (0, 0): no replay control (--oracle-ladder 0,...) measured what the recipe alone does, "
                 "so a gain the recipe makes is priced as real images")
        lines += ["", "What the images are worth in real ones: each generator cell's mean delta placed on the oracle's "
                      "curve of the same data size (monotone, read between the ladder's rungs, never beyond its top; "
                      f"{start}), 95% interval from a paired bootstrap over seeds:", "",
                  "| cell | delta (points) | worth in real images [95% CI] | beyond the replay control, points [95% CI] |",
                  "| --- | ---: | --- | ---: |"]

        def beyond(r):
            b = r.get("beyond_replay")
            if not b or b["low"] is None:
                return ""
            return f"{b['mean']:+.2f} [{b['low']:+.2f}, {b['high']:+.2f}] ({b['seeds']} seeds)"
        lines += [f"| {r['cell']} | {100 * r['delta_mean']:+.2f} | {r['worth_text']} | {beyond(r)} |" for r in priced]
        if any(r["worth"].get("seeds", 0) < 10 for r in priced):
            lines += ["", "With fewer than 10 seeds a percentile bootstrap is too narrow (its resamples cannot spread "
                          "more than the few seeds do): read the worth interval of such a cell as a lower bound on its "
                          "width; the last column is a paired t interval, which is not."]
    if any(r.get("variance") for r in rows):
        lines.append("\nThe delta CI above is for *these* generators; the last column treats the generator as a "
                     "random effect (the K generators' mean deltas as the sample), the answer for another "
                     "generator trained the same way: with few generators it is wide, since K - 1 degrees of "
                     "freedom is all the data says about the generator-to-generator spread.")
    return "\n".join(lines) + "\n"


def worth_figure(rows: list[dict]):
    """The oracle's curve (mean delta against real images added) of each data size, with each
    generator cell placed on it at its worth (horizontal bar: the 95% bootstrap interval, clipped to
    the ladder); None without a priced cell."""
    priced = [r for r in rows if r.get("worth", {}).get("real_images") is not None]
    if not priced:
        return None
    import math

    from harness.figures import subplots, tight
    fig, ax = subplots(figsize=(7, 5.5))
    curves = {}
    for r in priced:
        w = r["worth"]
        # Each curve is its cells' group (a data size, say): named by the cell's other axes.
        group = " ".join(p for p in r["cell"].split() if not p.startswith(("generator.kind=", "generate.n_samples=")))
        curves.setdefault(tuple(w["rungs"]) + tuple(w["oracle_points"]), (w, group))
    for i, (w, group) in enumerate(curves.values()):
        curve = w.get("curve") or [[0, 0], *zip(w["rungs"], w["oracle_points"])]  # a report from before replay
        ax.plot(*zip(*curve), color="black", lw=1, marker="s", ms=4,
                label=f"oracle (real held-out images{'; at 0: the training images replayed' if w['rungs'][0] == 0 else ''})"
                if i == 0 else None)
        if group:
            ax.annotate(group, curve[-1], textcoords="offset points", xytext=(-4, 6), ha="right", fontsize=7)
    for r in priced:
        w = r["worth"]
        top = w["top"]
        clip = lambda v: 0.0 if v == -math.inf else (top if v == math.inf else v)  # noqa: E731
        x = clip(w["real_images"])
        ax.errorbar([x], [w["delta_points"]], xerr=[[x - clip(w["low"])], [clip(w["high"]) - x]], marker="o",
                    capsize=3, label=f"{r['cell']}: {r['worth_text']}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("real images added (oracle)")
    ax.set_ylabel("synthetic arm - baseline, accuracy points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7)  # below: the labels are long
    ax.grid(alpha=0.3)
    tight(fig)
    return fig


def grid_figure(rows: list[dict], axes: list[tuple[str, list[str]]]):
    """A grid's paired accuracy delta (points, with its 95% CI as a band) against the first numeric axis, one
    line per combination of the other axes' values; None when no axis is numeric."""
    def number(v):
        try:
            return float(v)
        except ValueError:
            return None
    numeric = [k for k, values in axes if all(number(v) is not None for v in values)]
    if not numeric:
        return None
    from harness.figures import subplots, tight
    x_key = numeric[0]
    lines: dict[str, list[tuple[float, dict]]] = {}
    for row in rows:
        if not row["n"]:
            continue
        parts = dict(p.split("=", 1) for p in row["cell"].split(" "))
        other = " ".join(f"{k}={v}" for k, v in parts.items() if k != x_key) or "delta"
        lines.setdefault(other, []).append((float(parts[x_key]), row))
    fig, ax = subplots(figsize=(6.5, 4))
    for label, pts in lines.items():
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ax.plot(xs, [100 * r["delta_mean"] for _, r in pts], marker="o", label=label)
        ax.fill_between(xs, [100 * r["ci_low"] for _, r in pts], [100 * r["ci_high"] for _, r in pts], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(x_key)
    ax.set_ylabel("synthetic arm - baseline, accuracy points (95% CI)")
    ticks = sorted({x for pts in lines.values() for x, _ in pts})
    if all(x > 0 for x in ticks):
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    tight(fig)
    return fig
