"""Export the finished studies of an experiment (comparison.json of each) and the paired difference
between their synthetic arms, seed by seed (they share baselines and data draws):
    python studies/export.py EXPERIMENT OUT_DIR
    python studies/export.py --smoke DATA_DIR OUT_DIR   a check in seconds that this export still runs
        (tests/test_scripts.py): studies/generators.sh in its smoke mode makes two tiny studies in a
        temporary tracking store and ends by exporting them with this script"""
import json
import os
import subprocess
import sys
from pathlib import Path

if sys.argv[1:2] == ["--smoke"]:
    if len(sys.argv) != 4:
        sys.exit("usage: python studies/export.py --smoke DATA_DIR OUT_DIR (a class-folder tree; where the export goes)")
    sys.exit(subprocess.run(["bash", str(Path(__file__).with_name("generators.sh")), sys.argv[2]],
                            env={**os.environ, "SMOKE": "1", "OUT": sys.argv[3]}).returncode)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded file buries the table

import mlflow
import numpy as np
from scipy import stats

from harness.tracking import codecs, store

experiment, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
s = store.configure(experiment)
studies = s.client.search_runs([s.experiment_id], "tags.`harness.phase` = 'seeds' and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time ASC"])
arms = {}
for run in studies:
    kind = run.data.params.get("generator.kind", "gan")
    if run.data.params.get("pseudolabel.mode", "label") != "label":
        kind += f" ({run.data.params['pseudolabel.mode']})"
    cmp = s.client.search_runs([s.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and "
                                                  "tags.`harness.phase` = 'compare'")[0]
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{cmp.info.run_id}/comparison.json"))
    arms[kind] = report
    (out / f"{kind.replace(' (', '-').rstrip(')')}.json").write_text(codecs.dumps(report, indent=2))


def accuracy(report: dict, part: str) -> dict | None:
    return next((m for m in report.get(part, []) if m["metric"] == "Accuracy"), None)


def spread(values) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def difference(m: dict) -> str:
    """Two cells: the mean difference in points [95% CI], and its paired t p; a test that could not be
    made (no spread, one seed) is null in the JSON."""
    def pts(key):
        return "n/a" if m.get(key) is None else f"{100 * m[key]:+.2f}"
    p = "n/a" if m.get("t_p") is None else f"{m['t_p']:.3g}"
    return f"{pts('delta_mean')} [{pts('ci_low')}, {pts('ci_high')}] | {p}"


# Since the control arm a report's headline (`metrics`) is synthetic - control, the images' effect, and
# synthetic - baseline, the delta of the reports before it, is `synthetic_minus_baseline`; a study run
# without a control has only the latter, as `metrics`.
acc = {k: accuracy(r, "synthetic_minus_baseline" if r.get("controlled") else "metrics") for k, r in arms.items()}
lines = ["| arm | baseline acc (mean ± sd) | control acc | synthetic acc | images' effect: synthetic - control "
         "[95% CI] | paired t p | synthetic - baseline [95% CI] | paired t p |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for k, m in acc.items():
    images = accuracy(arms[k], "metrics") if arms[k].get("controlled") else None
    lines.append(f"| {k} | {spread(m['baseline'])} | {spread(images['control']) if images else 'none'} | "
                 f"{spread(m['synthetic'])} | {difference(images) if images else 'recipe not controlled | '} | "
                 f"{difference(m)} |")
lines.append("\nEach arm minus the GAN's synthetic arm, paired by seed (same data draws and baselines):\n")
for k in acc:
    if k == "gan" or "gan" not in acc:
        continue
    d = np.array(acc[k]["synthetic"]) - np.array(acc["gan"]["synthetic"])
    t = stats.ttest_1samp(d, 0.0)
    ci = t.confidence_interval(0.95)
    lines.append(f"- {k} minus gan: {100 * d.mean():+.2f} points [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}], "
                 f"paired t p = {t.pvalue:.3g}, n = {len(d)}")
text = "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
