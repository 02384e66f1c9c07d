"""The grid's saved views in the MLflow UI: the runs table grouped by cell, with the images' effect
in points beside the baseline, and the chart of it per cell."""
from __future__ import annotations

import json
import re

import optuna

from harness.grid.plan import PLAN, axis_keys, plan_of
from harness.tracking import store


VIEW = "mlflow.sharedViewState."  # the MLflow UI (>= 3.15) reads a saved view from this experiment tag
# Columns of the saved views: accuracy in percent and points with two decimals (pipeline.run logs them beside
# the fractions). The UI orders metric columns by name, so few: the baseline, then the images' effect.
HEADLINE = ("baseline/percent", "delta/points", "kept/count")  # recipe not controlled
CONTROLLED = ("baseline/percent", "images/points", "kept/count", "recipe/points")


def view_keys(study_name: str) -> dict[str, str]:
    """The share keys of a grid's two views of the runs table: `table` and `chart`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)
    return {"table": f"grid-{safe}", "chart": f"grid-{safe}-chart"}


def views(study_name: str, axes: list[str], controlled: bool = True) -> dict[str, dict]:
    """What a user looks at to compare the cells, as MLflow UI saved views: the grid's pipelines grouped
    by cell (each group's row is its seeds' mean), with the cell's axes and the headline metrics as
    columns, sorted by the images' effect (synthetic - control; without a control, the delta); and the
    same groups as a bar chart of it per cell."""
    lead = "images/points" if controlled else "delta/points"
    base = {"searchFilter": f"tags.`harness.grid` = '{study_name}' AND tags.`harness.phase` = 'pipeline'",
            "orderByKey": f"metrics.`{lead}`", "orderByAsc": False, "runsHiddenMode": "SHOW_ALL",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "harness.cell"}]}}
    columns = [f"metrics.`{m}`" for m in (CONTROLLED if controlled else HEADLINE)] + [f"params.`{a}`" for a in axes]
    return {"table": {**base, "selectedColumns": columns},
            "chart": {**base, "chartsSearchFilter": f"^{lead}$", "useGroupedValuesInCharts": True,
                      "hideEmptyCharts": True}}


def view_urls(client, experiment_id: str, base: str) -> list[str]:
    """`grid NAME: URL` for each grid view saved in the experiment (`harness ui` prints them)."""
    exp = client.get_experiment(experiment_id)
    keys = sorted(k[len(VIEW):] for k in exp.tags if k.startswith(VIEW + "grid-"))
    mode = {False: "TABLE", True: "CHART"}
    return [f"{k}: {base}/#/experiments/{experiment_id}/runs?viewStateShareKey={k}&compareRunsMode={mode[k.endswith('-chart')]}"
            for k in keys]


def save_views(s: store.Store, study: optuna.Study) -> None:
    held = study.user_attrs.get(PLAN, {})
    axes = axis_keys(held.get("axes", []))
    if held.get("ladder") and "generate.n_samples" not in axes:
        axes.append("generate.n_samples")
    keys = view_keys(study.study_name)
    for name, state in views(study.study_name, axes, plan_of(study)[0].control.enabled).items():
        s.client.set_experiment_tag(s.experiment_id, VIEW + keys[name], json.dumps(state))
