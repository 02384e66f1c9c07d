"""A GAN transferred from other classes against one trained from scratch: the generator phase of one
preset under gan.init = scratch, pretrain (trained first on every class of the data the study does not
use, then adapted), and pretrain with the critic's first blocks frozen (Freeze-D), each with
quality.enabled, so that each run's FD, KID, precision and recall (in the offline evaluator's features,
at every checkpoint) compare; the pretraining's own run and every time beside them.

    python studies/transfer.py ../shared/datasets/cifar10 studies/results/transfer --preset strong-baseline \
        --set data.n_per_class=100 --set gan.iterations=4000 --freeze-d 2
    python studies/transfer.py DIR OUT --smoke     # seconds: the tiny preset (tests/test_scripts.py)

Writes OUT/transfer-<tag>.md and .json (tag: the preset and the data size). The tracking store is
MLFLOW_TRACKING_URI (a fresh sqlite store under OUT's parent by default).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

QUALITY = ("quality/fd", "quality/kid", "quality/precision", "quality/recall")


def harness(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise click.ClickException(f"harness {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


@click.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--preset", default="strong-baseline", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="K=V")
@click.option("--freeze-d", default=2, show_default=True, help="gan.freeze_d of the Freeze-D variant.")
@click.option("--smoke", is_flag=True, help="Seconds: the tiny preset, a class-conditional GAN.")
def main(data_dir, out, preset, overrides, freeze_d, smoke):
    if smoke:
        preset, freeze_d = "tiny", 1
        overrides = ("data.classes=airplane,automobile", "gan.conditional=projection", "quality.n_samples=16",
                     "quality.evaluator_epochs=1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out.resolve().parent / 'transfer-mlflow.db'}")
    base = ["--preset", preset, "--data-dir", data_dir, "--experiment", "transfer",
            *[a for o in (*overrides, "quality.enabled=true") for a in ("--set", o)]]
    variants = {"scratch": ["gan.init=scratch"], "transferred": ["gan.init=pretrain"],
                f"transferred, Freeze-D {freeze_d}": ["gan.init=pretrain", f"gan.freeze_d={freeze_d}"]}
    seconds = {}
    for name, sets in variants.items():
        click.echo(f"generator: {name}...", err=True)
        seconds[name] = harness(["generator", *base, *[a for s in sets for a in ("--set", s)]], env)

    import mlflow
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("transfer").experiment_id
    runs = client.search_runs([exp], "tags.`harness.phase` = 'generator'", order_by=["attributes.start_time ASC"])
    pre = client.search_runs([exp], "tags.`harness.phase` = 'generator_pretrain'")
    rows = []
    for (name, _), run in zip(variants.items(), runs[-len(variants):]):
        source = run.data.tags.get("harness.reused_from", run.info.run_id)
        history = {k: {m.step: m.value for m in client.get_metric_history(source, k)} for k in QUALITY}
        last = max(history["quality/fd"])
        best = min(history["quality/fd"], key=history["quality/fd"].get)
        rows.append({"generator": name, "run": source, "train_seconds": client.get_run(source).data.metrics.get("gan/seconds"),
                     "command_seconds": round(seconds[name], 1), "last_epoch": last, "best_epoch": best,
                     **{f"last_{k.split('/')[1]}": history[k][last] for k in QUALITY},
                     **{f"best_{k.split('/')[1]}": history[k][best] for k in QUALITY}})
    pretrain = [{"run": r.info.run_id, "classes": r.data.params.get("pretrain.classes"),
                 "train_seconds": r.data.metrics.get("gan/seconds")} for r in pre]
    tag = f"{preset}-{next((o.split('=')[1] for o in overrides if o.startswith('data.n_per_class=')), 'preset')}"
    result = {"preset": preset, "overrides": list(overrides), "freeze_d": freeze_d, "generators": rows,
              "pretraining": pretrain,
              "command": "python studies/transfer.py " + " ".join([data_dir, str(out), "--preset", preset,
                                                                     *[a for o in overrides for a in ("--set", o)],
                                                                     "--freeze-d", str(freeze_d)])}
    (out / f"transfer-{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# A GAN transferred from other classes vs from scratch: {preset}, {' '.join(overrides)}\n",
             f"`{result['command']}`\n",
             "Sample quality in the offline evaluator's features (lower FD and KID, higher precision and recall "
             "are better); one generator each (n = 1).\n",
             "| generator | FD last | KID last | precision last | recall last | FD best (epoch) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['generator']} | {r['last_fd']:.1f} | {r['last_kid']:.2f} | {r['last_precision']:.2f} | "
                     f"{r['last_recall']:.2f} | {r['best_fd']:.1f} ({r['best_epoch']}) | {r['train_seconds'] or 0:.0f} |")
    for p in pretrain:
        lines.append(f"\nPretraining on {p['classes']}: run `{p['run']}`, {p['train_seconds'] or 0:.0f} s.")
    (out / f"transfer-{tag}.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
