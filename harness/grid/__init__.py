"""Grids: the cross product of config axes, each cell a paired multi-seed study, as (cell, seed) work
items in an Optuna storage that any number of workers, on any machines, pull until none is left.

    harness grid --preset tiny --axis data.n_per_class=10,20 --seeds 4 --study g   # plans it, then works
    harness worker --study g --storage URL                                         # more hands, anywhere
    harness grid --report --study g --storage URL                                  # the report, any time

- A work item is an enqueued Optuna trial (user attrs `cell`, `seed`): claiming one is Optuna's
  atomic WAITING -> RUNNING switch, a worker's trial heartbeat proves it alive, and a killed worker's
  item is failed once its heartbeat is stale and retried (RetryFailedTrialCallback) by whoever is there.
- Each item is one pipeline (`harness run` for that cell and seed) nested under the grid's one MLflow
  run (opened by whoever created the study) and tagged `harness.cell`; the phase cache reuses whatever
  is already finished, so a grid grows (more seeds, another value: the same command again) without
  recomputing. The trial's value is the pair's images' effect (synthetic - control) on accuracy.
- The report (grid.md, grid.json, grid.png: the effect per cell with its CI, a panel per regime, the data
  sizes as categories, a marker per generator; worth.png with an oracle ladder; report.html: all of it in
  one page) is logged on the grid run by the worker that finishes the last item.

    plan.py    axes, cells, seeds, the items in the study; a worker finding the grid
    work.py    claiming items, heartbeats, the pipeline of each, the last one reporting
    views.py   the saved views of the MLflow UI
    report.py  the images' effect per cell, Holm, verdicts, the worth in real images
"""
from __future__ import annotations

from harness.grid.plan import (COMPLETE, Cell, FAIL, JOIN, LADDER_AXES, PLAN, PRUNED, RUNNING, WAITING, axis_keys,
                               cells, check_generators, check_seeds, cost, extend, generators_of, halfwidth_of,
                               items_of, join_grid, ladder_group, open_grid, outcomes, parse_axes, parse_ladder,
                               plan, plan_of, planned, screened, screened_export, slots)
from harness.grid.report import report, worth_of
from harness.grid.views import CONTROLLED, HEADLINE, VIEW, save_views, view_keys, view_urls, views
from harness.grid.work import claim_item, open_run, work

__all__ = [
    "COMPLETE", "CONTROLLED", "Cell", "FAIL", "HEADLINE", "JOIN", "LADDER_AXES", "PLAN", "PRUNED", "RUNNING", "VIEW",
    "WAITING", "axis_keys", "cells", "check_generators", "check_seeds", "claim_item", "cost", "extend",
    "generators_of", "halfwidth_of", "items_of", "join_grid", "ladder_group", "open_grid", "open_run", "outcomes",
    "parse_axes", "parse_ladder", "plan", "plan_of", "planned", "report", "save_views", "screened",
    "screened_export", "slots", "view_keys", "view_urls", "views", "work", "worth_of"]
