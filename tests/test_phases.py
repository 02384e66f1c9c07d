"""harness/phases/: each phase through its own command (`harness baseline`, ...), as a user runs them
one by one: upstream results found by key (or named), and a whole run reusing them."""
from conftest import invoke

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
PHASES = ["baseline", "generator", "generate", "pseudolabel", "control", "synthetic", "compare"]


def _pipelines(client):
    exp = client.get_experiment_by_name("harness")
    return client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pipeline'",
                              order_by=["attributes.start_time ASC"])


def _tree_runs(client, parent_id):
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return parent, {r.data.tags["harness.phase"]: r for r in children}


def test_phases_one_by_one_then_run_reuses_them(runner, client, tree):
    common = ["--preset", "tiny", "--data-dir", tree, *CLASSES]
    for cmd in ["baseline", "generator", "generate", "pseudolabel", "control", "synthetic"]:
        invoke(runner, [cmd, *common])
    out = invoke(runner, ["run", *common]).output
    (pipe,) = _pipelines(client)
    _, kids = _tree_runs(client, pipe.info.run_id)
    assert {p for p, r in kids.items() if "harness.reused_from" in r.data.tags} == set(PHASES) - {"compare"}
    assert "| Accuracy |" in out
    # compare by parent and by explicit runs
    out = invoke(runner, ["compare", "--parent", pipe.info.run_id]).output
    assert "| Accuracy |" in out
    out = invoke(runner, ["compare", "--baseline", kids["baseline"].info.run_id,
                          "--synthetic", kids["synthetic"].info.run_id]).output
    assert out.strip().splitlines()[-3].startswith("| bird F1 |") and out.strip().endswith("report.html")
    # That compare run records what it compared, not a default config that never ran.
    exp = client.get_experiment_by_name("harness")
    last = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'compare'",
                              order_by=["attributes.start_time DESC"])[0]
    assert set(last.data.params) == {"upstream.baseline", "upstream.synthetic"}


def test_phase_without_upstream_says_what_to_run(runner, client, tree):
    result = invoke(runner, ["generate", "--preset", "tiny", "--data-dir", tree], ok=False)
    assert result.exit_code == 2
    assert "no finished generator run for this config" in result.output and "harness generator" in result.output
