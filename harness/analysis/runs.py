"""Which runs to compare: the baseline and synthetic runs of a pipeline, of a multi-seed study, of
every pipeline matching a filter, or two named runs; and checks that they may be paired. Every
lookup goes through the caller's client (the Store's), never one built from the global URI."""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError


def runs_of_pipeline(client, parent_id: str):
    """The baseline, synthetic and control (None where it has none) child runs of a pipeline parent run."""
    try:
        parent = client.get_run(parent_id)
    except Exception:
        raise HarnessError(f"no run {parent_id!r} in the tracking store") from None
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    by_phase = {r.data.tags.get("harness.phase"): r for r in children}
    missing = [p for p in ("baseline", "synthetic") if p not in by_phase]
    if missing:
        raise HarnessError(f"run {parent_id} has no {' or '.join(missing)} child run: is it a pipeline parent run?")
    return by_phase["baseline"], by_phase["synthetic"], by_phase.get("control")


def get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:
        raise HarnessError(f"no run {run_id!r} in the tracking store") from None


def classes_of(run) -> list[str]:
    return run.data.params["data.classes"].split(",")


def check_comparable(base, syn) -> None:
    keys = [k for k in base.data.params if k.startswith("data.") and k != "data.n_train"]
    differ = [k for k in keys if base.data.params.get(k) != syn.data.params.get(k)]
    if differ:
        raise HarnessError("the runs were trained on different data, so they cannot be compared: "
                           + "; ".join(f"{k} = {base.data.params.get(k)} vs {syn.data.params.get(k)}" for k in differ))
    same_test(base, syn)


def same_test(a, b) -> None:
    """The content digests of the test sets, where both runs recorded them: the same settings over
    another copy of the data (one changed image) are not the same test."""
    da, db = a.data.tags.get("harness.data.test"), b.data.tags.get("harness.data.test")
    if da and db and da != db:
        raise HarnessError(f"runs {a.info.run_id} and {b.info.run_id} were tested on different images (test-set "
                           f"digests {da} vs {db}), so they cannot be compared")


NOT_CONTROLLED = ("recipe not controlled: these runs have no control arm (control.enabled=false, or made by a "
                  "harness without one), so the difference mixes what the images add with what the synthetic arm's recipe "
                  "adds (more images per step, their weight, real-only epochs)")


@dataclass
class Pair:
    seed: str
    baseline: object  # mlflow Run
    synthetic: object
    control: object = None  # the recipe-matched control arm's run; None: recipe not controlled

    @property
    def reference(self):
        """The arm the synthetic one is judged against: the control where there is one."""
        return self.control if self.control is not None else self.baseline


def pairs_of_seeds(client, study_id: str) -> list[Pair]:
    """The (baseline, synthetic) pair of each pipeline under a `seeds` run (paired seeds)."""
    study = get_run(client, study_id)
    pipes = client.search_runs([study.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{study_id}' and tags.`harness.phase` = 'pipeline'",
                               order_by=["attributes.start_time ASC"])
    return [Pair(p.data.params.get("data.seed", "?"), *runs_of_pipeline(client, p.info.run_id)) for p in pipes]


def pairs_of_experiment(client, experiment: str, filter_string: str = "") -> list[Pair]:
    """Every finished pipeline of an experiment, optionally narrowed by an MLflow filter string."""
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
    return [Pair(p.data.params.get("data.seed", "?"), *runs_of_pipeline(client, p.info.run_id)) for p in pipes]


def pairs_for(client, parent: str | None, baseline_id: str | None, synthetic_id: str | None,
              experiment: str | None, filter_string: str | None, control_id: str | None = None) -> list[Pair]:
    if parent:
        run = get_run(client, parent)
        if run.data.tags.get("harness.phase") in ("seeds", "study"):  # "study": its name before 0.2
            return pairs_of_seeds(client, parent)
        base, aug, control = runs_of_pipeline(client, parent)
        return [Pair(base.data.params.get("data.seed", "?"), base, aug, control)]
    if baseline_id and synthetic_id:
        if baseline_id == synthetic_id:
            raise HarnessError(f"--baseline and --synthetic name the same run {baseline_id}: a run compared with "
                               "itself says nothing; name the baseline run and the synthetic-arm run of one pair")
        base, aug = get_run(client, baseline_id), get_run(client, synthetic_id)
        control = get_run(client, control_id) if control_id else None
        named = [("--baseline", base, "baseline"), ("--synthetic", aug, "synthetic")]
        # Swapped arms would print a loss as a gain with the same confidence: each flag takes its own phase.
        for flag, run, want in named + ([("--control", control, "control")] if control is not None else []):
            phase = run.data.tags.get("harness.phase")
            if phase != want or "test/accuracy" not in run.data.metrics:
                hint = (f" (arms swapped? it is the {phase} run: pass it as --{phase})"
                        if phase in ("baseline", "synthetic", "control") else "")
                raise HarnessError(f"{flag} {run.info.run_id} is a {phase or 'non-harness'} run; name a finished "
                                   f"{want} run{hint}")
        return [Pair(base.data.params.get("data.seed", "?"), base, aug, control)]
    return pairs_of_experiment(client, experiment, filter_string or "")


def check_pairs(pairs: list[Pair]) -> list[str]:
    """Refuse pairs trained on different data; return warnings (code versions differ, ...)."""
    if not pairs:
        raise HarnessError("nothing to compare: no baseline/synthetic pairs found")
    for pair in pairs:
        check_comparable(pair.baseline, pair.synthetic)
        if pair.control is not None:
            check_comparable(pair.baseline, pair.control)
    with_control = sum(p.control is not None for p in pairs)
    if 0 < with_control < len(pairs):
        # Synthetic minus control and synthetic minus baseline measure different things: pooled, the
        # mean would be neither.
        raise HarnessError(f"{with_control} of the {len(pairs)} pipelines have a control arm and the others do not "
                           "(recipe not controlled: made by a harness without one, or with control.enabled=false): their "
                           "differences measure different things and are never pooled; compare each group on its "
                           "own (--filter, or --parent of one study)")
    # Across pairs only the seed may change the data: classes, sizes and test split must agree.
    ref = pairs[0].baseline.data.params
    for pair in pairs[1:]:
        same_test(pairs[0].baseline, pair.baseline)
        p = pair.baseline.data.params
        differ = [k for k in ref if k.startswith("data.") and k not in ("data.seed", "data.n_train") and ref[k] != p.get(k)]
        if differ:
            raise HarnessError("the pipelines use different data configs and cannot be pooled: "
                               + "; ".join(f"{k} = {ref[k]} vs {p.get(k)}" for k in differ))
    warnings = [] if with_control else [NOT_CONTROLLED]
    versions = {r.data.tags.get("harness.code_version") for pr in pairs for r in (pr.baseline, pr.synthetic)}
    if len(versions) > 1:
        warnings.append(f"the runs come from {len(versions)} different code versions ({', '.join(sorted(map(str, versions)))})")
    return warnings


def predictions(client, run):
    """[N, 3] int64: test index, label, predicted, from the run's `predictions.json` table."""
    import numpy as np
    # A reused run holds no artifacts of its own: they are in the run it reused.
    source = run.data.tags.get("harness.reused_from", run.info.run_id)
    try:
        # In the run's own experiment: mlflow.load_table searches the active one, which is the
        # default experiment unless --experiment happened to name the right one.
        table = client.load_table(run.info.experiment_id, "predictions.json", run_ids=[source])
    except Exception as e:
        raise HarnessError(f"run {source} has no predictions table ({str(e).splitlines()[0][:200]})") from None
    return table[["index", "label", "predicted"]].to_numpy(np.int64).reshape(-1, 3)


