"""Export a finished grid: its report (grid.md, grid.json, grid.png from the grid run) and the
memorization share of the synthetic images each GAN cell's synthetic arm trained on, measured
against the images that GAN was trained on (with study.share_gan: the first seed's draw).

    python studies/export_grid.py STUDY STORAGE OUT_DIR [--data-dir DIR]

MLFLOW_TRACKING_URI names the grid's tracking store."""
import json
import sys
from pathlib import Path

import mlflow
import optuna
import torch
from mlflow.tracking import MlflowClient

from harness import config, data, grid, pipeline, quality
from harness.tracking import codecs

study_name, storage, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
data_dir = sys.argv[sys.argv.index("--data-dir") + 1] if "--data-dir" in sys.argv else None
out.mkdir(parents=True, exist_ok=True)
study = optuna.load_study(study_name=study_name, storage=storage)
client = MlflowClient()
grid_run = study.user_attrs["harness.mlflow_run"]
for name in ("grid.md", "grid.json", "grid.png"):
    try:
        mlflow.artifacts.download_artifacts(run_id=grid_run, artifact_path=name, dst_path=str(out))
    except Exception as e:  # a grid without a numeric axis has no figure
        print(f"{name}: {e}", file=sys.stderr)
for name in ("grid.md", "grid.json", "grid.png"):
    if (out / name).exists():
        (out / name).rename(out / f"{study_name}.{name.split('.')[1]}")


def source(run):
    """A reused run's outputs live in the run it reused."""
    rid = run.data.tags.get("harness.reused_from")
    return client.get_run(rid) if rid else run


cfg, cells, seeds = grid.plan_of(study)
memo = {}
for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
    cell = next(c for c in cells if c.label == t.user_attrs["cell"])
    if cell.cfg.generator.kind != "gan":
        continue
    parent = client.get_run(t.user_attrs["pipeline_run"])
    kids = {r.data.tags.get("harness.phase"): source(r) for r in
            client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    gan_data = pipeline.seeded(cell.cfg, seeds[0] if cell.cfg.study.share_gan else t.user_attrs["seed"]).data
    key = (cell.label, gan_data)
    if key not in memo:
        memo[key] = data.load_splits(gan_data, data_dir).train_x
    kept = torch.from_numpy(codecs.load_npz(kids["pseudolabel"].info.run_id, "kept.npz")["images"])
    generated = torch.from_numpy(codecs.load_npz(kids["generate"].info.run_id, "synthetic.npz")["images"])
    mk, _, dk = quality.memorization(kept, memo[key])
    mg, _, _ = quality.memorization(generated, memo[key])
    row = {"seed": t.user_attrs["seed"], "kept": len(kept), "kept_near_copy_share": mk["memorization/near_copy_share"],
           "kept_median_rms": mk["memorization/median_rms"], "kept_min_rms": float(dk.min()) if len(dk) else None,
           "generated_near_copy_share": mg["memorization/near_copy_share"], "generated_median_rms": mg["memorization/median_rms"]}
    memo.setdefault(cell.label, []).append(row)
result = {label: sorted(rows, key=lambda r: r["seed"]) for label, rows in memo.items() if isinstance(label, str)}
(out / f"{study_name}.memorization.json").write_text(json.dumps(
    {"threshold_rms": quality.NEAR_COPY_RMS, "against": "the GAN's own training images", "cells": result}, indent=2))
for label, rows in result.items():
    share = sum(r["kept_near_copy_share"] * r["kept"] for r in rows) / max(sum(r["kept"] for r in rows), 1)
    print(f"{label}: {sum(r['kept'] for r in rows)} kept images over {len(rows)} seeds; near-copy share "
          f"{share:.2%} (RMS < {quality.NEAR_COPY_RMS}); median RMS to the nearest training image "
          f"{sorted(r['kept_median_rms'] for r in rows)[len(rows) // 2]:.3f}; closest "
          f"{min(r['kept_min_rms'] for r in rows if r['kept_min_rms'] is not None):.3f}")
