"""The grid's report: the images' effect per cell with its CI, Holm and verdict, the worth of the
images in real ones along an oracle ladder; grid.md, grid.json, grid.png, worth.png, report.html."""
from __future__ import annotations


import optuna

from harness import config, generators
from harness.analysis import plateau, stats, worth
from harness.context import Context
from harness.grid.plan import COMPLETE, Cell, PLAN, items_of, generators_of, halfwidth_of, ladder_group, outcomes, plan_of
from harness.grid.views import view_keys
from harness.tracking import codecs, store
from harness.tracking.store import NOTE


def report(ctx: Context, study: optuna.Study, parent_id: str | None = None) -> tuple[str, dict]:
    """Per cell: baseline and synthetic arm mean +- std, the paired delta with its 95% CI, paired t p,
    Holm-adjusted across cells, verdict; from the finished items. Logged on the grid run if given."""
    from harness.analysis import page, render
    from harness.analysis import runs as cruns
    cfg, grid_cells, seeds = plan_of(study)
    held = study.user_attrs[PLAN]
    done: dict[str, list] = {}
    for (label, _), trials in items_of(study).items():
        finished = [t for t in trials if t.state == COMPLETE]
        if finished:  # one per (cell, seed), however often it was handed back
            done.setdefault(label, []).append(finished[0])
    k = held.get("generators") or generators_of(cfg, seeds)
    designs = {c.label: stats.Design(tuple(seeds), halfwidth_of(held), held.get("max_seeds") or len(seeds),
                                     k if generators.get(c.cfg.generator.kind).TRAINS else 0) for c in grid_cells}
    reports = []
    for cell in grid_cells:
        trials = sorted(done.get(cell.label, []), key=lambda t: t.user_attrs["seed"])
        pairs = [cruns.Pair(str(t.user_attrs["seed"]),
                            *cruns.runs_of_pipeline(ctx.store.client, t.user_attrs["pipeline_run"])) for t in trials]
        reports.append((cell.label, stats.seed_report(ctx.store.client, pairs) if pairs else None))
    margin = held.get("margin") or stats.MARGIN
    screen = held.get("screen")
    # A confirmation tests the cells its screen chose: Holm over those alone (the ladder's rungs, which
    # price them, are a family of their own).
    rows = stats.summarize(reports, designs, margin=margin,
                           family=(lambda cell: cell in screen["chosen"]) if screen is not None else None)
    priced = worth_of(grid_cells, {label: {int(t.user_attrs["seed"]): t.value for t in trials}
                                   for label, trials in done.items()})
    budget = {c.label: plateau.line(config.flat(c.cfg)) for c in grid_cells}
    for row in rows:
        row.update(priced.get(row["cell"], {}))
        if budget.get(row["cell"]):
            row["plateau"] = budget[row["cell"]]
    # At the first seeds, every cell's start: what the plan promised, whatever seeds came later.
    out = {"study": study.study_name, "seeds": seeds, "ci_halfwidth_points": halfwidth_of(held),
           "max_seeds": held.get("max_seeds"), "generators": k, "margin_points": margin,
           "equivalence": stats.EQUIVALENCE_RULE, "oracle_ladder": held.get("ladder", []),
           "mde_points": stats.mde(len(seeds)) if len(seeds) >= 2 else None, "cells": rows}
    generated = _generated(ctx.store, grid_cells, done)
    for row in rows:
        if row["cell"] in generated:
            row["generated"] = generated[row["cell"]]
    md = render.grid_markdown(study.study_name, len(grid_cells), seeds, out["mde_points"], rows,
                              halfwidth=halfwidth_of(held), max_seeds=held.get("max_seeds"), margin=margin)
    md += render.generated_markdown(rows)
    if screen is not None:
        out["screen"] = screen
        md = screening_markdown(screen, seeds) + md
    # What a confirmation of this grid reads (`harness grid --confirm grid.json`): the plan, and every item.
    values, used = outcomes(study)
    out |= {"plan": held, "outcomes": values, "seeds_used": used}
    keys = view_keys(study.study_name)
    out["ui_views"] = keys
    md += (f"\nIn the MLflow UI (`harness ui` prints the addresses): the saved view `{keys['table']}` lists this "
           f"grid's pipelines grouped by cell (each group's row is its seeds' mean) with the baseline's accuracy in "
           f"percent, the images' effect in points and the cell's axes as columns; `{keys['chart']}` charts the "
           f"images' effect per cell.\n")
    if parent_id is not None:
        client = ctx.store.client
        client.log_text(parent_id, md, "grid.md")
        client.log_text(parent_id, codecs.dumps(out, indent=2, default=float), "grid.json")
        drawn = []
        for fig, path, caption in ((render.grid_figure(rows, [tuple(a) for a in study.user_attrs[PLAN]["axes"]]),
                                    "grid.png", "The images' effect per cell, 95% CI"),
                                   (render.worth_figure(rows), "worth.png", "What the images are worth in real ones")):
            if fig is not None:
                drawn.append((f"{caption} ({path})", page.png(fig)))
                codecs.log_figure(fig, path, run_id=parent_id, client=client)
        page.log(f"Grid {study.study_name}", md, drawn, run_id=parent_id, client=client)
        store.log_batch(tags={NOTE: f"**Grid** `{study.study_name}`\n\n{md}"}, run_id=parent_id, client=ctx.store.client)
    return md, out


def _generated(store, grid_cells: list[Cell], done: dict[str, list]) -> dict[str, dict[str, list[float]]]:
    """Per cell whose generator trains, per finished seed: the images kept and, where the pipelines
    measured them (quality.enabled), FD, KID, precision and recall of the generated images, so that
    generators started differently (gan.init) compare in the report itself."""
    trains = {c.label for c in grid_cells if generators.get(c.cfg.generator.kind).TRAINS}
    ids = {t.user_attrs["pipeline_run"]: label for label, trials in done.items() if label in trains
           for t in trials if t.user_attrs.get("pipeline_run")}
    out: dict[str, dict[str, list[float]]] = {}
    listed = sorted(ids)
    for start in range(0, len(listed), 100):  # one query per hundred pipelines, not one per seed
        quoted = ", ".join(f"'{i}'" for i in listed[start:start + 100])
        for run in store.client.search_runs([store.experiment_id], f"attributes.run_id IN ({quoted})",
                                            max_results=100):
            values = out.setdefault(ids[run.info.run_id], {})
            for name in ("kept/count", *QUALITY):
                if name in run.data.metrics:
                    values.setdefault(name.split("/")[1], []).append(run.data.metrics[name])
    return out


QUALITY = ("quality/fd", "quality/kid", "quality/precision", "quality/recall")


def screening_markdown(screen: dict, seeds: list[int]) -> str:
    """What a confirmation grid confirms: the screen's cells and their means, which were chosen, and
    that its seeds are new."""
    lines = ["## Screened, then confirmed\n",
             f"The screen `{screen['study']}` ran {len(screen['means'])} cells on seeds "
             f"{', '.join(map(str, screen['seeds']))}; this grid confirms the {screen['top']} with the largest mean "
             f"images' effect there, on seeds from {min(seeds)} on: **no screening seed is reused** (the seeds that "
             "chose a cell would flatter it), and each confirmed cell's generators are new too. Holm is over the "
             "confirmed cells.\n", "| screened cell | mean images' effect over the screen's seeds (points) | |",
             "| --- | ---: | --- |"]
    lines += [f"| {label} | {mean:+.2f} | {'**confirmed here**' if label in screen['chosen'] else 'screened out'} |"
              for label, mean in screen["means"].items()]
    return "\n".join(lines) + "\n\n"


def worth_of(grid_cells: list[Cell], deltas: dict[str, dict[int, float]]) -> dict[str, dict]:
    """For each cell of a generator other than the oracle: what its images are worth in real images,
    on the curve of the oracle cells that share everything else with it (analysis.worth.worth); the
    oracle cells themselves say where their curve lies. `deltas`: cell -> seed -> accuracy delta."""
    groups: dict[str, dict[int, dict[int, float]]] = {}
    for c in grid_cells:
        if _rung(c) is not None and deltas.get(c.label):
            groups.setdefault(ladder_group(c.cfg), {})[_rung(c)] = deltas[c.label]
    out = {}
    for c in grid_cells:
        oracle = groups.get(ladder_group(c.cfg))
        if _rung(c) is not None or not oracle or not deltas.get(c.label) or set(oracle) == {0}:
            continue
        w = worth.worth(oracle, deltas[c.label])
        out[c.label] = {"worth": w, "worth_text": worth.worth_words(w, c.cfg.generate.n_samples, c.cfg.generator.kind)}
        if 0 in oracle:  # the replay control: what the images add beyond the recipe, paired seed by seed
            out[c.label]["beyond_replay"] = worth.paired_difference(deltas[c.label], oracle[0])
    return out


def _rung(c: Cell) -> int | None:
    """How many new real images the cell's kind adds (its `real_images_added`: the oracle its sample
    count, replay none), or None for a kind whose images are not real ones."""
    added = getattr(generators.get(c.cfg.generator.kind), "real_images_added", None)
    return added(c.cfg) if added else None
