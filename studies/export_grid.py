"""Export a finished grid: its report (grid.md, grid.json, grid.png from the grid run) and, per cell
and seed, the generator's training time, the sample quality of the generated images (FD, KID,
precision, recall in the evaluator's space) and, for kinds that train, the near-copy share of the
generated and kept images against the generator's own training images (STUDY.generators.json/.md), and
the compute the grid took against a fixed design of N seeds with one generator per cell (STUDY.compute.json).

    python studies/export_grid.py STUDY STORAGE OUT_DIR [--data-dir DIR] [--fixed-seeds N]
    python studies/export_grid.py --smoke DATA_DIR OUT_DIR

MLFLOW_TRACKING_URI names the grid's tracking store. --smoke is a check in seconds that this export
still runs (tests/test_scripts.py): studies/grid.sh in its smoke mode makes a tiny grid in a temporary
folder and ends by exporting it with this script."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.argv[1:2] == ["--smoke"]:
    if len(sys.argv) != 4:
        sys.exit("usage: python studies/export_grid.py --smoke DATA_DIR OUT_DIR (a class-folder tree; where the export goes)")
    work = tempfile.mkdtemp(prefix="export-grid-smoke-")
    sys.exit(subprocess.run(["bash", str(Path(__file__).with_name("grid.sh")), "smoke", sys.argv[2], work],
                            env={**os.environ, "SMOKE": "1", "OUT": sys.argv[3]}).returncode)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded file buries the table

import mlflow
import numpy as np
import optuna
import torch
from mlflow.tracking import MlflowClient

from harness import data, generators, grid, pipeline, precision, quality, train
from harness.tracking import codecs

study_name, storage, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
data_dir = sys.argv[sys.argv.index("--data-dir") + 1] if "--data-dir" in sys.argv else None
out.mkdir(parents=True, exist_ok=True)
study = optuna.load_study(study_name=study_name, storage=storage)
client = MlflowClient()
grid_run = study.user_attrs["harness.mlflow_run"]
logged = {a.path for a in client.list_artifacts(grid_run)}
for name in ("grid.md", "grid.json", "grid.png", "worth.png"):
    if name in logged:  # a grid without a numeric axis (or an oracle ladder) has no such figure
        mlflow.artifacts.download_artifacts(run_id=grid_run, artifact_path=name, dst_path=str(out))
for name, to in (("grid.md", "md"), ("grid.json", "json"), ("grid.png", "png"), ("worth.png", "worth.png")):
    if (out / name).exists():
        (out / name).rename(out / f"{study_name}.{to}")


def source(run):
    """A reused run's outputs live in the run it reused."""
    rid = run.data.tags.get("harness.reused_from")
    return client.get_run(rid) if rid else run


def seconds(run) -> float | None:
    return (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None


def evaluator_of(cell_cfg) -> quality.Evaluator:
    """The evaluator a pipeline with quality.enabled would train for this data size (phases/evaluator.py:
    its fixed settings, seed 0's draw), so every kind at one size is measured in one feature space."""
    ecfg = pipeline.seeded(precision.resolve_config(cell_cfg, device), seeds[0])
    splits = data.load_splits(quality.evaluator_data(ecfg), data_dir)
    model, _ = train.train_classifier(splits.train_x, splits.train_y, len(splits.classes),
                                      quality.evaluator_training(ecfg), device, label="evaluator")
    test_x = data.load_splits(ecfg.data, data_dir).test_x
    return quality.Evaluator(model, quality.features(model, test_x, device), device)


# Per cell: the seconds its generator trained, and per seed the sample quality of the images its
# synthetic arm drew from (all generated images, in the size's evaluator space), and for kinds that
# train, the near-copy share of those images and of the kept ones against the generator's own
# training images (seed s uses generator s mod K, trained on seed s mod K's draw).
cfg, cells, seeds = grid.plan_of(study)
device = torch.device("cpu")
evaluators, draws, rows, trained_seconds, phase_seconds = {}, {}, {}, {}, {}
for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
    cell = next(c for c in cells if c.label == t.user_attrs["cell"])
    seed, kind = t.user_attrs["seed"], cell.cfg.generator.kind
    parent = client.get_run(t.user_attrs["pipeline_run"])
    kids = {r.data.tags.get("harness.phase"): r for r in
            client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    for phase, r in kids.items():  # what this item computed, for the compute accounting below
        if "harness.reused_from" not in r.data.tags and seconds(r) is not None:
            phase_seconds.setdefault((cell.label, phase), []).append(seconds(r))
    size = cell.cfg.data.n_per_class
    if size not in evaluators:
        evaluators[size] = evaluator_of(cell.cfg)
    generated = torch.from_numpy(codecs.load_npz(source(kids["generate"]).info.run_id, "synthetic.npz")["images"])
    kept = torch.from_numpy(codecs.load_npz(source(kids["pseudolabel"]).info.run_id, "kept.npz")["images"])
    row = {"seed": seed, "generated": len(generated), "kept": len(kept),
           "generate_seconds": seconds(source(kids["generate"])),
           **{k.split("/")[1]: v for k, v in evaluators[size].measure(generated, cfg.quality.k).items()}}
    if generators.get(kind).TRAINS:
        gen = source(kids["generator"]) if "generator" in kids else None
        if gen is not None:
            trained_seconds.setdefault(cell.label, {})[gen.info.run_id] = seconds(gen)
        k = study.user_attrs[grid.PLAN].get("generators") or grid.generators_of(cell.cfg, seeds)  # as the workers used
        draw = pipeline.seeded(cell.cfg, seed % k).data
        if draw not in draws:
            draws[draw] = data.load_splits(draw, data_dir).train_x
        mk, _, dk = quality.memorization(kept, draws[draw])
        mg, _, _ = quality.memorization(generated, draws[draw])
        row.update({"kept_near_copy_share": mk["memorization/near_copy_share"], "kept_median_rms": mk["memorization/median_rms"],
                    "kept_min_rms": float(dk.min()) if len(dk) else None,
                    "generated_near_copy_share": mg["memorization/near_copy_share"],
                    "generated_median_rms": mg["memorization/median_rms"]})
    rows.setdefault(cell.label, []).append(row)

result = {}
for label, rs in rows.items():
    rs.sort(key=lambda r: r["seed"])
    result[label] = {"generator_seconds": sorted(trained_seconds.get(label, {}).values()), "seeds": rs}
(out / f"{study_name}.generators.json").write_text(codecs.dumps(
    {"quality": "FD, KID, k-NN precision/recall of each seed's generated images against the real test images, "
                "in the feature space of the evaluator CNN a quality-enabled pipeline trains at that data size",
     "memorization": {"threshold_rms": quality.NEAR_COPY_RMS, "against": "the generator's own training images"},
     "cells": result}, indent=2))


def mean_sd(values, fmt):
    v = np.array([x for x in values if x is not None], dtype=float)
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 else (fmt.format(v[0]) if len(v) else "")


lines = [f"Generated images per cell of grid `{study_name}` (mean ± sd over seeds; quality in the evaluator space of each data size):", "",
         "| cell | generator trained (s) | generate (s) | FD | KID | precision | recall | kept | near-copies: generated / kept |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for label, r in result.items():
    rs = r["seeds"]
    copies = (f"{sum(x['generated_near_copy_share'] * x['generated'] for x in rs) / sum(x['generated'] for x in rs):.2%} / "
              f"{sum(x['kept_near_copy_share'] * x['kept'] for x in rs) / max(sum(x['kept'] for x in rs), 1):.2%}"
              if "kept_near_copy_share" in rs[0] else "real images")
    lines.append(f"| {label} | {', '.join(f'{s:.0f}' for s in r['generator_seconds'])} | "
                 f"{mean_sd([x['generate_seconds'] for x in rs], '{:.0f}')} | {mean_sd([x['fd'] for x in rs], '{:.2f}')} | "
                 f"{mean_sd([x['kid'] for x in rs], '{:.3f}')} | {mean_sd([x['precision'] for x in rs], '{:.3f}')} | "
                 f"{mean_sd([x['recall'] for x in rs], '{:.3f}')} | {mean_sd([x['kept'] for x in rs], '{:.0f}')} | {copies} |")
(out / f"{study_name}.generators.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))


# Compute: what the grid's workers actually computed (every phase run that was not reused from the
# cache, in worker-seconds: each worker has one thread), and what a fixed design with FIXED_SEEDS seeds
# in every cell and one generator per cell would have computed, estimated from the same runs: per data
# size the mean baseline time, per cell the mean time of its per-seed phases (generate, pseudolabel,
# synthetic, compare), and per training cell the mean generator training time, times the counts that
# design needs (baselines are shared between the kinds at one size and seed, as the cache shares them).
FIXED_SEEDS = int(sys.argv[sys.argv.index("--fixed-seeds") + 1]) if "--fixed-seeds" in sys.argv else 15
actual = sum(sum(v) for v in phase_seconds.values())
sizes = {c.label: c.cfg.data.n_per_class for c in cells}
estimate, per_cell = 0.0, {}
for size in sorted(set(sizes.values())):
    base = [s for (label, ph), v in phase_seconds.items() if ph == "baseline" and sizes[label] == size for s in v]
    estimate += FIXED_SEEDS * float(np.mean(base))
for c in cells:
    per_seed = sum(float(np.mean(phase_seconds[(c.label, ph)])) for ph in ("generate", "pseudolabel", "synthetic", "compare")
                   if (c.label, ph) in phase_seconds)
    gen = phase_seconds.get((c.label, "generator"), [])
    estimate += FIXED_SEEDS * per_seed + (float(np.mean(gen)) if gen else 0.0)
    per_cell[c.label] = {"seeds": len(rows.get(c.label, [])), "per_seed_seconds": per_seed,
                         "generator_trainings": len(gen), "generator_seconds_mean": float(np.mean(gen)) if gen else None}
compute = {"actual_worker_seconds": actual, "fixed_design": f"{FIXED_SEEDS} seeds in every cell, one generator per cell",
           "fixed_design_estimate_worker_seconds": estimate, "ratio": actual / estimate, "cells": per_cell,
           "how": "actual: the durations of every phase run the grid computed (not reused from the cache), one thread each; "
                  "estimate: the same runs' mean times per phase (baseline per data size, per-seed phases per cell, "
                  "generator training per cell) times the counts the fixed design needs"}
(out / f"{study_name}.compute.json").write_text(codecs.dumps(compute, indent=2))
print(f"compute: {actual / 3600:.2f} worker-hours computed; a fixed {FIXED_SEEDS}-seed grid with one generator per cell: "
      f"{estimate / 3600:.2f} (estimated from the same runs' phase times); ratio {actual / estimate:.2f}")
