"""Export the finished studies of an experiment (comparison.json of each) and the paired difference
between their synthetic arms, seed by seed (they share baselines and data draws):
    python studies/export.py EXPERIMENT OUT_DIR"""
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
from scipy import stats

from harness.tracking import codecs, store

experiment, out = sys.argv[1], Path(sys.argv[2])
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
acc = {k: next(m for m in r["metrics"] if m["metric"] == "Accuracy") for k, r in arms.items()}
lines = ["| arm | baseline acc (mean ± sd) | synthetic acc (mean ± sd) | delta [95% CI] | paired t p |",
         "| --- | ---: | ---: | ---: | ---: |"]
for k, m in acc.items():
    b, a = np.array(m["baseline"]), np.array(m["synthetic"])
    lines.append(f"| {k} | {100 * b.mean():.2f} ± {100 * b.std(ddof=1):.2f} | {100 * a.mean():.2f} ± "
                 f"{100 * a.std(ddof=1):.2f} | {100 * m['delta_mean']:+.2f} [{100 * m['ci_low']:+.2f}, "
                 f"{100 * m['ci_high']:+.2f}] | {m['t_p']:.3g} |")
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
