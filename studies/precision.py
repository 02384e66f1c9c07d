"""Does bf16 change the answer? Paired fp32 vs bf16 runs through the real CLI (issue 26).

  classifier  the strong-baseline preset's baseline (1000 per class, crop+flip, SGD one-cycle, 1880
              steps) at seeds 0..N-1 (data.seed = classifier.seed = seed), fp32 and bf16:
              test accuracy, the paired difference's 95% CI, wall time
  gan         the cpu preset's WGAN-GP (gradient penalty: double backward) for --gan-iterations
              generator iterations at gan.seed 0..N-1, fp32 and bf16: FD and KID of the last
              checkpoint in one fp32 evaluator's feature space, the fp32 seed-to-seed spread, the
              paired difference, wall time

    python studies/precision.py --data-dir ../shared/datasets/cifar10 --seeds 5 --gan-iterations 400 \
        --out studies/results/precision
    python studies/precision.py --smoke --data-dir DIR --out OUT    # seconds: tiny, 1 seed, 2 GAN iterations

Runs go to a fresh SQLite store in a temporary folder (nothing is left in the repository but the
exported JSON and Markdown).
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
from scipy import stats

from harness.tracking import codecs


def paired(a: list[float], b: list[float]) -> dict:
    d = np.asarray(b) - np.asarray(a)
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    p = float(stats.ttest_rel(b, a).pvalue) if n > 1 and sd > 0 else float("nan")
    return {"n": n, "mean": float(d.mean()), "sd": sd, "ci": [float(d.mean()) - half, float(d.mean()) + half], "p": p}


def spread(x: list[float]) -> dict:
    return {"mean": statistics.mean(x), "sd": statistics.stdev(x) if len(x) > 1 else float("nan")}


@click.command()
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--seeds", default=5, show_default=True)
@click.option("--gan-iterations", default=400, show_default=True)
@click.option("--only", type=click.Choice(["both", "classifier", "gan"]), default="both", show_default=True)
@click.option("--out", default=None, help="Where precision.json and .md go.  [default: studies/results/precision; "
                                          "with --smoke, the temporary folder of the runs]")
@click.option("--smoke", is_flag=True, help="Seconds, to show the script still runs (tests/test_scripts.py): the tiny "
                                            "preset in both parts, 1 seed, 2 GAN iterations.")
def main(data_dir, seeds, gan_iterations, only, out, smoke):
    from mlflow.tracking import MlflowClient

    from harness import precision
    import torch
    classifier_preset, gan_preset = "strong-baseline", "cpu"
    if smoke:
        classifier_preset, gan_preset, seeds, gan_iterations = "tiny", "tiny", 1, 2
    data_dir = str(Path(data_dir).resolve())
    work = Path(tempfile.mkdtemp(prefix="harness-precision-"))
    # A smoke run's figures mean nothing: they never replace the committed ones unless --out says so.
    out = Path(out or (work / "results" if smoke else "studies/results/precision")).resolve()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db")
    uri = env["MLFLOW_TRACKING_URI"]

    def harness(*args) -> None:
        cmd = [sys.executable, "-m", "harness", *args, "--data-dir", data_dir, "-e", "precision"]
        print("$ harness " + " ".join(args), file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL)

    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "bf16": precision.native_bf16(torch.device("cpu"))[1], "torch": torch.__version__,
                          "threads": torch.get_num_threads()}}
    client = None
    if only in ("both", "classifier"):
        for seed in range(seeds):
            for p in ("fp32", "bf16"):
                harness("baseline", "--preset", classifier_preset, "--set", f"classifier.precision={p}",
                        "--set", f"data.seed={seed}", "--set", f"classifier.seed={seed}")
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("precision").experiment_id
        rows, n_per_class = {}, None
        for r in client.search_runs([exp], "tags.`harness.phase` = 'baseline'"):
            n_per_class = r.data.params["data.n_per_class"]
            rows[(r.data.params["classifier.precision"], int(r.data.params["data.seed"]))] = {
                "accuracy": 100 * r.data.metrics["test/accuracy"], "seconds": (r.info.end_time - r.info.start_time) / 1000}
        acc = {p: [rows[(p, s)]["accuracy"] for s in range(seeds)] for p in ("fp32", "bf16")}
        sec = {p: [rows[(p, s)]["seconds"] for s in range(seeds)] for p in ("fp32", "bf16")}
        result["classifier"] = {"preset": classifier_preset, "n_per_class": n_per_class, "accuracy": acc, "seconds": sec,
                                "fp32": spread(acc["fp32"]), "bf16": spread(acc["bf16"]),
                                "bf16_minus_fp32_points": paired(acc["fp32"], acc["bf16"]),
                                "speedup": statistics.median(sec["fp32"]) / statistics.median(sec["bf16"])}
    if only in ("both", "gan"):
        for seed in range(seeds):
            for p in ("fp32", "bf16"):
                harness("generator", "--preset", gan_preset, "--set", f"gan.precision={p}", "--set", f"gan.seed={seed}",
                        "--set", f"gan.iterations={gan_iterations}", "--set", "quality.enabled=true",
                        "--set", "quality.precision=fp32")
        client = client or MlflowClient(uri)
        exp = client.get_experiment_by_name("precision").experiment_id
        rows = {}
        for r in client.search_runs([exp], "tags.`harness.phase` = 'generator'"):
            fd = client.get_metric_history(r.info.run_id, "quality/fd")
            kid = client.get_metric_history(r.info.run_id, "quality/kid")
            last = max(m.step for m in fd)
            rows[(r.data.params["gan.precision"], int(r.data.params["gan.seed"]))] = {
                "fd": next(m.value for m in fd if m.step == last), "kid": next(m.value for m in kid if m.step == last),
                "epoch": last, "seconds": r.data.metrics["gan/seconds"]}
        gan = {"preset": gan_preset, "iterations": gan_iterations, "epoch": rows[("fp32", 0)]["epoch"]}
        for metric in ("fd", "kid", "seconds"):
            v = {p: [rows[(p, s)][metric] for s in range(seeds)] for p in ("fp32", "bf16")}
            gan[metric] = {**v, "fp32_spread": spread(v["fp32"]), "bf16_spread": spread(v["bf16"]),
                           "bf16_minus_fp32": paired(v["fp32"], v["bf16"])}
        gan["speedup"] = statistics.median(gan["seconds"]["fp32"]) / statistics.median(gan["seconds"]["bf16"])
        result["gan"] = gan
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(codecs.dumps(result, indent=2))
    (out / "precision.md").write_text(markdown(result, seeds, gan_iterations))
    print((out / "precision.md").read_text())


def markdown(r: dict, seeds: int, iters: int) -> str:
    m = r["machine"]
    lines = [f"# fp32 vs bf16, paired over {seeds} seeds", "",
             f"Machine: {m['cpu']}; {m['bf16']}; torch {m['torch']}, {m['threads']} threads.", ""]
    if "classifier" in r:
        c = r["classifier"]
        d = c["bf16_minus_fp32_points"]
        lines += [f"## Classifier: {c['preset']} baseline, {c['n_per_class']} per class, test accuracy (%)", "",
                  "| seed | fp32 | bf16 | bf16 - fp32 | fp32 s | bf16 s |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in range(seeds):
            a, b = c["accuracy"]["fp32"][s], c["accuracy"]["bf16"][s]
            lines.append(f"| {s} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {c['seconds']['fp32'][s]:.0f} | {c['seconds']['bf16'][s]:.0f} |")
        lines += ["", f"fp32 {c['fp32']['mean']:.2f} ± {c['fp32']['sd']:.2f}, bf16 {c['bf16']['mean']:.2f} ± {c['bf16']['sd']:.2f}; "
                  f"bf16 - fp32 = {d['mean']:+.2f} points, 95% CI [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], paired t p = {d['p']:.3g}; "
                  f"wall time {c['speedup']:.2f}x (medians).", ""]
    if "gan" in r:
        g = r["gan"]
        lines += [f"## GAN: {g['preset']} preset WGAN-GP, {iters} generator iterations (last checkpoint, epoch {g['epoch']})", "",
                  "| seed | FD fp32 | FD bf16 | KID fp32 | KID bf16 | fp32 s | bf16 s |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in range(seeds):
            lines.append(f"| {s} | {g['fd']['fp32'][s]:.1f} | {g['fd']['bf16'][s]:.1f} | {g['kid']['fp32'][s]:.2f} | "
                         f"{g['kid']['bf16'][s]:.2f} | {g['seconds']['fp32'][s]:.0f} | {g['seconds']['bf16'][s]:.0f} |")
        for metric in ("fd", "kid"):
            x = g[metric]
            d = x["bf16_minus_fp32"]
            lines.append(f"\n{metric.upper()}: fp32 {x['fp32_spread']['mean']:.2f} ± {x['fp32_spread']['sd']:.2f} (seed-to-seed SD), "
                         f"bf16 {x['bf16_spread']['mean']:.2f} ± {x['bf16_spread']['sd']:.2f}; paired bf16 - fp32 = {d['mean']:+.2f} "
                         f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], p = {d['p']:.3g}.")
        lines += ["", f"GAN wall time {g['speedup']:.2f}x (medians of gan/seconds).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
