"""Comparisons for people: the reference's table (metric, baseline, synthetic, difference), the
multi-seed report in Markdown, and their figures."""
from __future__ import annotations

import statistics

from harness.analysis.runs import NOT_CONTROLLED
from harness.analysis.stats import ALPHA, EQUIVALENCE_RULE, SeedReport

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


def delta_metrics(table, prefix: str = "delta") -> dict[str, float]:
    return {f"{prefix}/{key}": a - b for key, _, b, a in table}


def effects(base: dict[str, float], control: dict[str, float], syn: dict[str, float], classes) -> dict[str, float]:
    """images/* (synthetic - control: the headline), recipe/* (control - baseline) and delta/*
    (synthetic - baseline, = recipe + images) for every test metric the three arms have."""
    return {**delta_metrics(rows(control, syn, classes), "images"), **delta_metrics(rows(base, control, classes), "recipe"),
            **delta_metrics(rows(base, syn, classes))}


def arms_markdown(base: dict[str, float], control: dict[str, float], syn: dict[str, float], classes) -> str:
    """The three arms side by side, the images' effect first."""
    lines = ["| Metric | Baseline | Control | Synthetic | Images (synthetic - control) | Recipe (control - baseline) "
             "| Synthetic - baseline |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (key, label, b, a), (_, _, c, _) in zip(rows(base, syn, classes), rows(control, syn, classes)):
        if key == "accuracy":
            lines.append(f"| {label} | {100 * b:.2f}% | {100 * c:.2f}% | {100 * a:.2f}% | **{100 * (a - c):+.2f} pts** | "
                         f"{100 * (c - b):+.2f} pts | {100 * (a - b):+.2f} pts |")
        else:
            lines.append(f"| {label} | {b:.4f} | {c:.4f} | {a:.4f} | **{a - c:+.4f}** | {c - b:+.4f} | {a - b:+.4f} |")
    return "\n".join(lines) + "\n"


def markdown(table) -> str:
    lines = ["| Metric | Baseline | Synthetic | Difference |", "| --- | ---: | ---: | ---: |"]
    for key, label, b, a in table:
        if key == "accuracy":  # the reference reports accuracy in percent, its delta in points
            lines.append(f"| {label} | {100 * b:.2f}% | {100 * a:.2f}% | {100 * (a - b):+.2f} pts |")
        else:
            lines.append(f"| {label} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
    return "\n".join(lines) + "\n"


def figure(table, classes, control: dict[str, float] | None = None):
    """Test F1 per arm, overall and per class, one row each (names of any length read across); the number
    beside each row is the headline difference: synthetic - control where there is a control, else
    synthetic - baseline."""
    import numpy as np

    from harness.figures import ARMS, subplots, tight, wrap
    labels = ["overall (weighted)"] + [wrap(c, 24) for c in classes]
    keys = ["f1_weighted"] + [f"{c}/f1" for c in classes]
    base = [dict((k, b) for k, _, b, _ in table)[key] for key in keys]
    aug = [dict((k, a) for k, _, _, a in table)[key] for key in keys]
    arms = [("baseline", base), ("synthetic", aug)]
    if control is not None:
        arms.insert(1, ("control (real images replayed)", [control[f"test/{k}"] for k in keys]))
    ref = arms[1][1] if control is not None else base
    y, h = np.arange(len(labels)), 0.8 / len(arms)
    fig, ax = subplots(figsize=(7.5, 1.6 + 0.22 * len(arms) * len(labels) + 0.3 * len(labels)))
    for j, (name, vals) in enumerate(arms):
        ax.barh(y + (j - (len(arms) - 1) / 2) * h, vals, h, label=name, color=ARMS[name.split()[0]],
                hatch=("", "//", "..")[j % 3], edgecolor="white")
    lo = min(min(v[1]) for v in arms)
    for i, (r, a) in enumerate(zip(ref, aug)):
        ax.annotate(f"{a - r:+.3f}", (1.0, i), xytext=(4, 0), textcoords="offset points", va="center", ha="left",
                    color="#009E73" if a >= r else "#D55E00", fontweight="bold", annotation_clip=False)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    ax.set_xlabel("test F1")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(arms), frameon=False)
    fig.suptitle("synthetic - " + ("control (the images' effect)" if control is not None
                                   else "baseline (recipe not controlled)") + ": the numbers on the right")
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
    ref = report.reference.capitalize()
    p = lambda v: f"{v:.3g}" if v == v else "n/a"  # noqa: E731

    def table(stats, a, b, what):
        out = [f"| Metric | {a} (mean ± std) | {b} (mean ± std) | {what} mean [95% CI] | paired t p | Wilcoxon p |",
               "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for s in stats:
            t = s.tests()
            unit = " pts" if s.percent else ""
            ci = f" [{fmt(t['ci_low'], s.percent)}, {fmt(t['ci_high'], s.percent)}]" if t["ci_low"] == t["ci_low"] else ""
            out.append(f"| {s.label}{' (%)' if s.percent else ''} | {ms(s.base, s.percent)} | {ms(s.aug, s.percent)} | "
                       f"{'+' if t['delta_mean'] >= 0 else ''}{fmt(t['delta_mean'], s.percent)}{unit}{ci} | "
                       f"{p(t['t_p'])} | {p(t['wilcoxon_p'])} |")
        return out
    lines = [f"Paired seeds: n = {report.n} ({', '.join(report.seeds)}); generator {gan}. "
             f"Headline: {report.effect}.", ""]
    lines += table(report.stats, ref, "Synthetic", "Images: synthetic - control" if report.controlled else "Delta")
    if report.controlled:
        lines += ["", "The recipe's own effect (control - baseline: the training images replayed through the synthetic "
                      "arm's recipe), and the two together (synthetic - baseline):", ""]
        lines += table(report.recipe, "Baseline", "Control", "Recipe: control - baseline")[:2 + len(report.recipe)]
        lines += table(report.total, "Baseline", "Synthetic", "Synthetic - baseline")[2:]
    lines += ["", "McNemar test per seed (test predictions; exact binomial on discordant images):", "",
              f"| Seed | {ref}-only correct | Synthetic-only correct | p |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {sd} | {b} | {c} | {p:.3g} |" for sd, b, c, p in report.mcnemar]
    lines += ["", f"**Verdict** on {report.effect} (test accuracy, alpha {ALPHA}): {report.verdict()}."]
    if report.controlled and report.recipe:
        lines += recipe_line(report.recipe[0].tests()["delta_mean"], report.margin)
    if report.plateau:
        lines.append(report.plateau)
    if 2 <= report.n < 6:
        lines.append(f"Note: with {report.n} seeds the two-sided Wilcoxon test cannot reach p < 0.05 "
                     f"(smallest possible p = {2 / 2 ** report.n:.3g}).")
    lines += [f"Warning: {w}." for w in report.warnings]
    return "\n".join(lines) + "\n"


def recipe_line(recipe_delta: float, margin: float) -> list[str]:
    """The warning every report gives when the control and the baseline differ by more than the margin:
    the recipe itself moves the result, so the images' effect is read against something else than the
    plain baseline."""
    if 100 * recipe_delta > margin:
        return [f"The recipe alone adds {100 * recipe_delta:+.2f} points: the baseline is under-trained; train it "
                "longer before judging images."]
    if 100 * recipe_delta < -margin:
        return [f"The recipe alone costs {100 * -recipe_delta:.2f} points (the control is below the baseline: its "
                "extra passes over real images overfit, or its loss weights or schedule hurt): the images' effect is "
                "measured against a recipe worse than the plain baseline; read synthetic - baseline beside it."]
    return []


def seed_figure(report: SeedReport):
    """Per metric, one row: the arms' means with their seeds as dots (left) and the paired difference
    with its 95% CI (right, the zero line: no effect)."""
    import numpy as np

    from harness.figures import ARMS, subplots, tight, wrap
    fig, (ax, ax_d) = subplots(1, 2, figsize=(11, 1.8 + 0.45 * len(report.stats)), sharey=True,
                               gridspec_kw={"width_ratios": [3, 2]})
    labels = [wrap(s.label, 24) for s in report.stats]
    y = np.arange(len(labels))
    for off, arm, name in ((-0.2, "base", report.reference), (0.2, "aug", "synthetic")):
        vals = [getattr(s, arm) for s in report.stats]
        ax.barh(y + off, [np.mean(v) for v in vals], 0.4, color=ARMS[name], alpha=0.6, label=f"{name} (mean)")
        for i, v in enumerate(vals):
            ax.scatter(v, np.full(len(v), y[i] + off), color=ARMS[name], s=14, zorder=3, edgecolor="black", lw=0.4)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    lo = min(min(s.base + s.aug) for s in report.stats)
    ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    ax.set_title(wrap(f"test metrics over {report.n} seeds (dots: seeds)", 50))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, frameon=False)
    t = [s.tests() for s in report.stats]
    means = [d["delta_mean"] for d in t]
    err = np.array([[m - d["ci_low"], d["ci_high"] - m] if d["ci_low"] == d["ci_low"] else [0, 0]
                    for m, d in zip(means, t)]).T
    ax_d.errorbar(means, y, xerr=err, fmt="o", capsize=4, color="k")
    ax_d.axvline(0, color="gray", linestyle="--")
    ax_d.set_xlabel(wrap(f"synthetic - {report.reference}: mean, 95% CI (dashed: no effect)", 32))
    ax_d.set_title(wrap(report.verdict().split(" (")[0], 40))
    tight(fig)
    return fig


def grid_markdown(study_name: str, n_cells: int, seeds: list[int], mde_points: float | None,
                  rows: list[dict], halfwidth: float | None = None, max_seeds: int | None = None,
                  margin: float = 1.0) -> str:
    """The grid report's tables: per cell the arms' mean +- std, the paired delta [95% CI], t p, Holm p
    and verdict; then how each cell's seeds were spent: the CI half-width and MDE at the seeds used,
    why they stopped, and with K >= 2 generators the delta's variance split between generators and
    the interval for a new generator (rows from analysis.stats.summarize)."""
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
             "inconclusive (neither: the data cannot tell)\n"]
    controlled = [r for r in rows if r["n"] and r.get("controlled")]
    if controlled:
        lines += ["Every comparison is against the cell's control: the same recipe with the real training images in "
                  "the synthetic slot. **images** = synthetic - control, what the generated images add (the "
                  "verdict's); recipe = control - baseline, what the recipe alone adds.\n",
                  "| cell | n | baseline % | control % | synthetic % | images [95% CI] | recipe [95% CI] | t p | "
                  "Holm p | verdict |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    else:
        lines += [f"{NOT_CONTROLLED[0].upper()}{NOT_CONTROLLED[1:]}.\n",
                  "| cell | n | baseline % | synthetic % | delta [95% CI] | t p | Holm p | verdict |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    ci = lambda d: f"{100 * d['delta_mean']:+.2f} [{f(100 * d['ci_low'], '+.2f')}, {f(100 * d['ci_high'], '+.2f')}]"  # noqa: E731
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['cell']} | 0 | |{' | |' if controlled else ''} | | | | no finished item |")
            continue
        arms = f"{pct(r['baseline_mean'])} ± {pct(r['baseline_std'])} | "
        if controlled:
            arms += (f"{pct(r['control_mean'])} ± {pct(r['control_std'])} | " if r.get("controlled")
                     else "recipe not controlled | ")
        arms += f"{pct(r['synthetic_mean'])} ± {pct(r['synthetic_std'])} | {ci(r)} | "
        if controlled:
            arms += f"{ci(r['recipe'])} | " if r.get("controlled") else " | "
        lines.append(f"| {r['cell']} | {r['n']} | {arms}{r['t_p']:.3g} | {r['holm_p']:.3g} | {r['verdict']} |")
    for sign in (1, -1):
        recipe = [r for r in controlled if sign * 100 * r["recipe"]["delta_mean"] > margin]
        if recipe:
            worst = max(recipe, key=lambda r: sign * r["recipe"]["delta_mean"])
            lines += ["", recipe_line(worst["recipe"]["delta_mean"], margin)[0] +
                      f" (cell {worst['cell']}; {len(recipe)} of {len(controlled)} cells beyond ±{margin:g} points)"]
    budget: dict[str, list[str]] = {}
    for r in rows:
        if r.get("plateau"):
            budget.setdefault(r["plateau"], []).append(r["cell"])
    for text, cells in budget.items():
        lines += ["", text if len(budget) == 1 and len(cells) == len(rows) else
                  f"{text.rstrip('.')} (cells: {'; '.join(cells)})."]
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
        start = ("it starts at the control (no real image added: the recipe with the training images replayed), "
                 "and a cell below it is worth less than nothing" if priced[0].get("controlled") else
                 "it starts at the replay control (the training images themselves through the same recipe: "
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
        lines += [f"| {r['cell']} | {_placed(r)} | {r['worth_text']} | {beyond(r)} |" for r in priced]
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


def generated_markdown(rows: list[dict]) -> str:
    """The generated images per cell whose generator trains (rows' `generated`, from grid.report): how many
    were kept and, where the pipelines measured them, their quality against the real test images."""
    cells = [r for r in rows if r.get("generated")]
    if not cells:
        return ""

    def cell(values, spec):
        if not values:
            return ""
        sd = f" ± {statistics.stdev(values):{spec}}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):{spec}}{sd}"
    lines = ["", "The generated images per cell (mean ± sd over seeds; FD, KID, precision and recall in the "
                 "evaluator's features, lower FD and KID and higher precision and recall are better):", "",
             "| cell | kept | FD | KID | precision | recall |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in cells:
        g = r["generated"]
        lines.append(f"| {r['cell']} | {cell(g.get('count'), '.0f')} | {cell(g.get('fd'), '.1f')} | "
                     f"{cell(g.get('kid'), '.3f')} | {cell(g.get('precision'), '.3f')} | "
                     f"{cell(g.get('recall'), '.3f')} |")
    if not any(r["generated"].get("fd") for r in cells):
        lines += ["", "Sample quality was not measured: these pipelines ran without `quality.enabled` "
                      "(`studies/export_grid.py` measures it afterwards from the generate runs' images)."]
    return "\n".join(lines) + "\n"


def _parts(label: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in label.split(" ") if "=" in p)


GENERATOR_KEYS = ("generator.", "generate.")  # what tells a grid's series apart; other axes make its panels


def _series_name(parts: dict[str, str]) -> str:
    """A cell's generator in words: its kind, its image count where the cell sets one, other generator settings."""
    out = [parts.get("generator.kind", "")]
    if "generate.n_samples" in parts:
        out.append(f"{int(parts['generate.n_samples']):,} images")
    out += [f"{k}={v}" for k, v in parts.items() if k.startswith(GENERATOR_KEYS) and
            k not in ("generator.kind", "generate.n_samples")]
    return " ".join(x for x in out if x) or "synthetic"


def _panel_name(parts: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"{k}={parts[k]}" for k in keys if k in parts)


def _panels(n: int, width: float, height: float, sharey: bool = True):
    """n small multiples on a grid of at most three columns, sharing their axes."""
    from harness.figures import subplots
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = subplots(rows, cols, figsize=(width * cols + 0.6, height * rows + 1.3), sharey=sharey, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ladder_seeds(r: dict) -> str:
    """" (on the 5 of 15 seeds the ladder ran)" when a cell grew past its ladder's seeds: its worth is
    paired seed by seed, so it places the delta of those seeds, not the cell's."""
    shared, n = r["worth"].get("seeds"), r.get("n")
    return f" (on the {shared} of {n} seeds the ladder ran)" if shared and n and shared < n else ""


def _placed(r: dict) -> str:
    """The delta a cell's worth was read at (its own mean, or that of the seeds it shares with the ladder)."""
    d = r["worth"].get("delta_points")  # absent from reports written before it was recorded
    return f"{100 * r['delta_mean']:+.2f}" if d is None else f"{d:+.2f}{_ladder_seeds(r)}"


def worth_figure(rows: list[dict]):
    """What each generator cell's images are worth in real ones: one panel per oracle curve (a data
    size, a regime), the curve (mean images' effect against real held-out images added) and each
    generator cell placed on it at its worth (horizontal bar: the 95% bootstrap interval, clipped to
    the ladder); None without a priced cell."""
    priced = [r for r in rows if r.get("worth", {}).get("real_images") is not None]
    if not priced:
        return None
    import math

    from harness.figures import style, tight, wrap
    groups: dict[str, list[dict]] = {}
    for r in priced:
        parts = _parts(r["cell"])
        group = ", ".join(f"{k}={v}" for k, v in parts.items() if not k.startswith(GENERATOR_KEYS)) or "all cells"
        groups.setdefault(group, []).append(r)
    controlled = bool(priced[0].get("controlled"))
    names = sorted({_series_name(_parts(r["cell"])) for r in priced})
    label = {r["cell"]: wrap(f"{_series_name(_parts(r['cell']))}: {r['worth_text']}{_ladder_seeds(r)}", 44)
             for r in priced}
    legend_lines = max(1 + sum(label[r["cell"]].count("\n") + 1 for r in cells) for cells in groups.values())
    fig, axes = _panels(len(groups), 4.6, 3.0 + 0.26 * legend_lines)  # room below each panel for its legend
    for ax, (group, cells) in zip(axes, groups.items()):
        w0 = cells[0]["worth"]
        curve = w0.get("curve") or [[0, 0], *zip(w0["rungs"], w0["oracle_points"])]  # a report from before replay
        ax.plot(*zip(*curve), color="black", lw=1.2, marker="s", ms=4, label="real held-out images (oracle)")
        for r in cells:
            w = r["worth"]
            top = w["top"]
            clip = lambda v: 0.0 if v == -math.inf else (top if v == math.inf else v)  # noqa: E731
            x = clip(w["real_images"])
            name = _series_name(_parts(r["cell"]))
            ax.errorbar([x], [w["delta_points"]], xerr=[[x - clip(w["low"])], [clip(w["high"]) - x]], capsize=3,
                        ms=7, linestyle="none", label=label[r["cell"]],
                        **style(1 + names.index(name)))
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(wrap(group, 40))
        ax.set_xlabel("real images added")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, fontsize=9)
    axes[0].set_ylabel(wrap(("images' effect (synthetic - control)" if controlled else "synthetic - baseline")
                            + ", accuracy points", 36))
    fig.suptitle("What the generated images are worth in real ones" + ("; dashed: the control" if controlled else ""))
    tight(fig)
    return fig


def grid_figure(rows: list[dict], axes: list[tuple[str, list[str]]]):
    """A grid's paired accuracy effect (points, 95% CI): one panel per regime (the axes that are neither
    the generator's nor the first numeric one), the first numeric axis (a data size) as categories along
    x, one marker per generator; the dashed zero line is the control (or the baseline, for runs without
    one). None when no cell has finished."""
    import numpy as np

    from harness.figures import style, tight, wrap
    cells = [(_parts(r["cell"]), r) for r in rows if r.get("n")]
    if not cells:
        return None

    def number(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    # A joint axis ("a+b+c", a confirmation's) names no cell's part: its members are the cells' own keys.
    keys = [k for k in dict.fromkeys([k for k, _ in axes] + [k for parts, _ in cells for k in parts])
            if any(k in parts for parts, _ in cells)]
    rest = [k for k in keys if not k.startswith(GENERATOR_KEYS)]
    numeric = [k for k in rest if all(number(p.get(k)) is not None for p, _ in cells)]
    x_key = (numeric or rest or [None])[0]
    panel_keys = [k for k in rest if k != x_key]
    xs = sorted({p.get(x_key, "") for p, _ in cells}, key=lambda v: (number(v) is None, number(v) or 0, v))
    names = list(dict.fromkeys(_series_name(p) for p, _ in sorted(cells, key=lambda c: _series_name(c[0]))))
    panels = list(dict.fromkeys(_panel_name(p, panel_keys) for p, _ in cells))
    fig, flat = _panels(len(panels), max(3.2, 0.9 + 0.5 * len(xs) * max(1, len(names)) ** 0.5), 3.2)
    width = 0.75 / max(1, len(names))
    for ax, panel in zip(flat, panels):
        for j, name in enumerate(names):
            pts = [(xs.index(p.get(x_key, "")), r) for p, r in cells
                   if _panel_name(p, panel_keys) == panel and _series_name(p) == name]
            if not pts:
                continue
            at = np.array([i for i, _ in pts]) + (j - (len(names) - 1) / 2) * width
            mid = np.array([100 * r["delta_mean"] for _, r in pts])
            lo = np.array([100 * r["ci_low"] if r["ci_low"] == r["ci_low"] else 100 * r["delta_mean"] for _, r in pts])
            hi = np.array([100 * r["ci_high"] if r["ci_high"] == r["ci_high"] else 100 * r["delta_mean"] for _, r in pts])
            ax.errorbar(at, mid, yerr=[mid - lo, hi - mid], linestyle="none", capsize=3, ms=6,
                        label=name, **style(j))
        ax.axhline(0, color="black", lw=1, ls="--")
        # Long category names (paths, model names) stand on end, wrapped: side by side they would collide.
        ax.set_xticks(range(len(xs)), [wrap(x, 16) for x in xs], rotation=90 if max(map(len, xs)) > 6 else 0)
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_xlabel("real images per class" if x_key == "data.n_per_class" else wrap(x_key or "", 28))
        if panel:
            ax.set_title(wrap(panel, 36), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    controlled = any(r.get("controlled") for _, r in cells)
    flat[0].set_ylabel(wrap(("images' effect: synthetic - control" if controlled else
                             "synthetic - baseline (recipe not controlled)") + ", accuracy points, 95% CI", 40))
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[1:]:  # a series missing from the first panel still gets its legend entry
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    from matplotlib.lines import Line2D
    handles.append(Line2D([], [], color="black", lw=1, ls="--"))
    labels.append("the control (no effect)" if controlled else "the baseline (no effect)")
    labels = [wrap(t, 40) for t in labels]
    # As many columns as the canvas holds: ~0.075 in a character at 10 pt, plus the marker.
    entry = 0.6 + 0.075 * max(len(line) for t in labels for line in t.split("\n"))
    fig.legend(handles, labels, loc="outside lower center", frameon=False,
               ncols=max(1, min(4, len(labels), int(fig.get_figwidth() // entry))))
    tight(fig)
    return fig
