"""Every script we ship under benchmarks/ and studies/ runs in its smoke mode, as CI would run it: a
fresh process on the tests' generated class-folder tree, its exit code 0, and what it prints or writes
checked for the figures it exists to produce. A script nobody runs rots silently (bench_gan and
bench_records crashed for weeks on a renamed attribute); here it fails by name.

Smoke modes: `--smoke` for the Python scripts, `SMOKE=1` for the shell scripts (their headers say
what each cuts). The exporters' smoke modes run the study script that feeds them (export.py:
generators.sh; export_grid.py: grid.sh), so one test covers both."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Run by CI's second step (`pytest -m scripts`), not by a plain `pytest`: ~8 CPU-minutes of process starts.
pytestmark = pytest.mark.scripts

ROOT = Path(__file__).resolve().parents[1]
# Scripts with no smoke test here, and why; every other file under benchmarks/ and studies/ has one.
NOT_HERE = {"studies/ui_shots.py": "tests/test_ui.py runs its --smoke in the same step (it needs a browser, as that "
                                   "module does)"}


def run(tmp_path: Path, *cmd, env: dict | None = None, cwd: Path | None = None) -> str:
    """One script as CI runs it: the venv's python and `harness` first on PATH, one torch thread (two
    test processes share the cores), temporary files and any default tracking store under tmp_path."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            **(env or {})}
    full.pop("MLFLOW_RUN_ID", None)
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, cwd=cwd or tmp_path, env=full, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                                  f"\n--- stderr\n{proc.stderr[-5000:]}")
    return proc.stdout


def python(tmp_path: Path, script: str, *args, **kwargs) -> str:
    return run(tmp_path, sys.executable, ROOT / script, *args, **kwargs)


def number(pattern: str, text: str) -> float:
    """The figure `pattern` captures in `text`, which must be there."""
    m = re.search(pattern, text, re.M)
    assert m, f"no line matching {pattern!r} in:\n{text[-3000:]}"
    return float(m.group(1))


COVERED: set[str] = set()


def covers(*scripts):
    def mark(test):
        COVERED.update(scripts)
        return test
    return mark


def test_every_script_has_a_smoke_test():
    shipped = {str(p.relative_to(ROOT)) for folder in ("benchmarks", "studies") for p in (ROOT / folder).iterdir()
               if p.suffix in (".py", ".sh")}
    assert shipped - set(NOT_HERE) == COVERED, (
        f"without a smoke test in tests/test_scripts.py: {sorted(shipped - set(NOT_HERE) - COVERED)}; "
        f"tested but gone: {sorted(COVERED - shipped)}")


# Benchmarks

@covers("benchmarks/bench_classifier.py")
def test_bench_classifier(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_classifier.py", "--smoke", "--data-dir", tree)
    assert "60 images (CIFAR-10, 3 classes)" in out  # the tiny draw of the tree, not random images
    assert number(r"simplecnn\s+harness / bare = ([\d.]+)x", out) > 0
    assert number(r"harness / dataloader = ([\d.]+)x", out) > 0
    assert "matmul peak (256^2" in out


@covers("benchmarks/bench_decode.py")
def test_bench_decode(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_decode.py", "--smoke", "--data-dir", tree)
    counts = re.findall(r"^(first \(decode\)|second \(cache\)): (\d+) images of 4 classes", out, re.M)
    # 10 training images and all 12 test images of each of the tree's 4 classes, both times.
    assert counts == [("first (decode)", "88"), ("second (cache)", "88")], out


@covers("benchmarks/bench_gan.py")
def test_bench_gan_against_this_tree_as_before(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_gan.py", "--smoke", "--data-dir", tree, "--before", ROOT)
    assert "failed" not in out, out
    for variant in ("harness", "bare", "before"):
        assert number(rf"^{variant}\s+([\d.]+)\s+[\d.]+x", out) > 0  # generator iterations/s
    assert number(r"harness / before = ([\d.]+)x", out) > 0
    assert number(r"generator phase: 1 epochs in [\d.]+ s; MLflow calls \d+, [\d.]+ s = ([\d.]+)% of the phase", out) > 0


@covers("benchmarks/bench_diffusion.py")
def test_bench_diffusion(tmp_path, tree):
    pytest.importorskip("diffusers")
    out = python(tmp_path, "benchmarks/bench_diffusion.py", "--smoke", "--data-dir", tree)
    assert "failed" not in out, out
    assert number(r"^harness\s+[\d.]+\s+([\d.]+)x", out) > 0  # against the plain diffusers loop
    assert number(r"^plain\s+[\d.]+\s+([\d.]+)x", out) == 1.0
    assert number(r"2 steps: ([\d.]+) images/s", out) > 0


@covers("benchmarks/bench_text2image.py")
def test_bench_text2image(tmp_path):
    pytest.importorskip("diffusers")
    out = python(tmp_path, "benchmarks/bench_text2image.py", "--smoke")
    rows = re.findall(r"^(harness|bare) (txt2img|img2img)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)x$", out, re.M)
    assert sorted((who, mode) for who, mode, _, _ in rows) == [
        ("bare", "img2img"), ("bare", "txt2img"), ("harness", "img2img"), ("harness", "txt2img")], out
    assert all(float(rate) > 0 for *_, rate, _ in rows)


@covers("benchmarks/bench_probe.py")
def test_bench_probe(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_probe.py", "--smoke", "--data-dir", tree)
    assert re.search(r"^probe\s+baseline\s+[\d.]+ s\s+synthetic\s+[\d.]+ s$", out, re.M), out
    assert number(r"probe / train = ([\d.]+)", out) > 0


@covers("benchmarks/bench_records.py")
def test_bench_records(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_records.py", "--smoke", "--data-dir", tree)
    assert re.search(r"baseline phase \(1 epochs\): with LoggedModel \+ system metrics [\d.]+ s, without [\d.]+ s", out), out
    assert number(r"generator checkpoint export \(width 8\): first ([\d.]+) s", out) > 0


@covers("benchmarks/bench_run.py")
def test_bench_run_with_this_tree_twice(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_run.py", "--smoke", "--data-dir", tree,
                 "--tree", f"a={ROOT}", "--tree", f"b={ROOT}")
    assert number(r"^a\s+cold .* ratio to a \(medians\): cold ([\d.]+)x", out) == 1.0
    assert number(r"^b\s+cold .* ratio to a \(medians\): cold ([\d.]+)x; cached", out) > 0


@covers("benchmarks/bench_volume.py")
def test_bench_volume(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_volume.py", "--smoke", "--data-dir", tree)
    rows = re.findall(r"^\| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) \| (\d+) \| (\d+) \| (\d+) \|$", out, re.M)
    assert [r[0] for r in rows] == ["64", "2,000"], out
    assert all(int(r[4]) > 0 and int(r[5]) > 0 for r in rows)
    assert number(r"\(([\d,.]+) images/s at the margin\)", out.replace(",", "")) > 0


@covers("studies/transfer.py")
def test_transfer_study(tmp_path, tree):
    out_dir = tmp_path / "out"
    out = python(tmp_path, "studies/transfer.py", str(tree), str(out_dir), "--smoke")
    rows = re.findall(r"^\| (scratch|transferred|transferred, Freeze-D 1) \| ([\d.]+) \|", out, re.M)
    assert [r[0] for r in rows] == ["scratch", "transferred", "transferred, Freeze-D 1"], out
    saved = json.loads((out_dir / "transfer-tiny-preset.json").read_text())
    assert len(saved["pretraining"]) == 1 and saved["pretraining"][0]["classes"]
    assert len({g["run"] for g in saved["generators"]}) == 3


@covers("benchmarks/bench_store_calls.py")
def test_bench_store_calls(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_store_calls.py", "--smoke", "--data-dir", tree, "--tree", f"this={ROOT}")
    table = {row[0]: (int(row[1]), int(row[2])) for row in re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|$", out, re.M)}
    assert {"pipeline", "baseline", "generator", "synthetic", "compare", "total"} <= set(table), out
    cold, cached = table["total"]
    assert 0 < cached < cold  # a cached rerun looks phases up instead of logging them
    for what in ("cold sqlite", "cached sqlite", "cached server"):
        assert number(rf"{what}: this ([\d.]+) s", out) > 0
    calls = json.loads(Path(re.search(r"per-method counts: (\S+)", out).group(1)).read_text())
    assert set(calls["this"]) == {"cold", "cached"}


@covers("benchmarks/bench_sweep.py")
def test_bench_sweep(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_sweep.py", "--smoke", "--data-dir", tree)
    assert number(r"reuse speed-up = ([\d.]+)x best-of-1", out) > 0
    assert re.search(r"with reuse \d+, --no-cache \d+", out), out
    assert "reuse:    best params" in out and "no-cache: best params" in out


@covers("benchmarks/bench_trial.py")
def test_bench_trial(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_trial.py", "--smoke", "--data-dir", tree)
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([-\d.]+) \|", out, re.M)
    assert [r[0] for r in rows] == ["0", "1"], out
    assert number(r"trials 2-2: overhead median ([\d.]+) s", out) >= 0


@covers("benchmarks/bench_workers.py")
def test_bench_workers(tmp_path, tree):
    out = python(tmp_path, "benchmarks/bench_workers.py", "--smoke", "--data-dir", tree)
    assert "1-cell (20 per class) x 1-seed tiny grid (1 pipelines)" in out, out
    assert number(r"^  1 worker\s+[\d.]+ /\s+[\d.]+\s+([\d.]+)x", out) == 1.0
    assert number(r"^  2 workers\s+[\d.]+ /\s+[\d.]+\s+([\d.]+)x", out) > 0
    assert number(r"^  2 workers x --threads \d+\s+[\d.]+ /\s+[\d.]+\s+([\d.]+)x", out) > 0


# Studies

@covers("studies/budget.py")
def test_budget(tmp_path, tree):
    out = python(tmp_path, "studies/budget.py", "--smoke", "--data-dir", tree, "--out", tmp_path / "budget" / "tiny")
    report = json.loads((tmp_path / "budget" / "tiny.json").read_text())
    assert [(r["n_per_class"], r["steps"]) for r in report["rows"]] == [(10, 4), (10, 8), (20, 4), (20, 8)]
    assert all(len(r["accuracy"]) == 2 and all(0 <= a <= 1 for a in r["accuracy"]) for r in report["rows"])
    assert [r["change"] is None for r in report["rows"]] == [True, False, True, False]  # a change from half the steps
    assert (tmp_path / "budget" / "tiny.md").read_text() in out


@covers("studies/precision.py")
def test_precision(tmp_path, tree):
    python(tmp_path, "studies/precision.py", "--smoke", "--data-dir", tree, "--out", tmp_path / "precision")
    result = json.loads((tmp_path / "precision" / "precision.json").read_text())
    assert {p: len(v) for p, v in result["classifier"]["accuracy"].items()} == {"fp32": 1, "bf16": 1}
    assert result["classifier"]["n_per_class"] == "20"
    assert {p: len(v) for p, v in result["gan"]["fd"].items() if p in ("fp32", "bf16")} == {"fp32": 1, "bf16": 1}
    assert result["gan"]["fd"]["fp32"][0] > 0
    md = (tmp_path / "precision" / "precision.md").read_text()
    assert "## Classifier: tiny baseline, 20 per class" in md and "## GAN: tiny preset WGAN-GP, 2 generator" in md


@covers("studies/digits.sh")
def test_digits(tmp_path):
    work = tmp_path / "digits-work"
    run(tmp_path, "bash", ROOT / "studies" / "digits.sh", "single", work, env={"SMOKE": "1"}, cwd=ROOT)
    report = (work / "results" / "single.md").read_text()
    # The three digit classes, each with its own rows in the per-class table.
    assert all(f"| {c} precision |" in report for c in (3, 5, 8)), report
    assert (work / "mlflow.db").is_file()  # its own store, not the one in the environment


@covers("studies/export.py", "studies/generators.sh")
def test_export_runs_generators_sh_and_exports_each_arm(tmp_path, tree):
    out = tmp_path / "export"
    python(tmp_path, "studies/export.py", "--smoke", tree, out)
    for name in ("gan", "oracle-none"):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["controlled"] and report["seeds"] == ["0", "1"], report
    summary = (out / "summary.md").read_text()
    assert re.search(r"^\| gan \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [-+\d.]+ \[", summary, re.M), summary
    assert re.search(r"^\| oracle \(none\) \|", summary, re.M), summary
    assert re.search(r"^- oracle \(none\) minus gan: [-+\d.]+ points .* n = 2$", summary, re.M), summary
    assert not (ROOT / "mlruns").exists()  # every run went to the smoke's own store and folder


@covers("studies/export_grid.py", "studies/grid.sh")
def test_export_grid_runs_grid_sh_with_two_workers_and_exports_it(tmp_path, tree):
    out = tmp_path / "grid"
    python(tmp_path, "studies/export_grid.py", "--smoke", tree, out)
    cells = json.loads((out / "smoke.generators.json").read_text())["cells"]
    assert set(cells) == {"generator.kind=gan", "generator.kind=oracle"}, cells
    gan, oracle = cells["generator.kind=gan"]["seeds"][0], cells["generator.kind=oracle"]["seeds"][0]
    assert gan["generated"] == oracle["generated"] == 24
    assert "generated_near_copy_share" in gan and "generated_near_copy_share" not in oracle  # only a trained kind copies
    assert gan["fd"] > 0
    compute = json.loads((out / "smoke.compute.json").read_text())
    assert compute["actual_worker_seconds"] > 0 and compute["ratio"] > 0
    assert json.loads((out / "smoke.json").read_text())  # the grid's own report, downloaded
    assert (out / "smoke.time.txt").read_text().startswith("grid smoke: ")


@covers("studies/refigure.py")
def test_refigure(tmp_path):
    out = python(tmp_path, "studies/refigure.py", "--smoke")
    written = [Path(line) for line in out.split()]
    assert [p.name for p in written] == ["smoke-grid.png"], out  # no oracle ladder in it: no worth figure
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
