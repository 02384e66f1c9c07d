"""precision: `auto` follows the hardware (faked here both ways), the resolved value is what runs are
logged and keyed with, bf16 training leaves fp32 state on disk, and a grid resolves per worker."""
import dataclasses

import optuna
import pytest
import torch

from conftest import invoke
from harness import config, precision, train
from harness.generators import gan

T = ["--preset", "tiny", "--set", "data.classes=airplane,automobile,bird"]
AMX = {"amx_bf16": True, "avx512_bf16": True, "cpu_name": "Fake Xeon"}
NONE = {"avx2": True, "cpu_name": "Fake EPYC"}


def _machine(monkeypatch, caps):
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: dict(caps))


def test_auto_follows_the_cpu_and_the_gpu(monkeypatch):
    cpu = torch.device("cpu")
    _machine(monkeypatch, AMX)
    assert precision.native_bf16(cpu) == (True, "Fake Xeon with AMX-BF16 and AVX512-BF16")
    assert precision.resolve("auto", cpu) == "bf16"
    _machine(monkeypatch, {"avx512_bf16": True})
    assert precision.resolve("auto", cpu) == "bf16"
    _machine(monkeypatch, NONE)
    assert precision.resolve("auto", cpu) == "fp32" and "without bf16 units" in precision.native_bf16(cpu)[1]
    assert precision.resolve("bf16", cpu) == "bf16"  # asked for outright: given, emulated or not
    cfg = config.load("tiny", ["gan.precision=auto"])
    assert {cfg.classifier.precision, cfg.gan.precision, cfg.quality.precision} == {"auto"}
    local = precision.resolve_config(cfg, cpu)
    assert (local.classifier.precision, local.gan.precision, local.quality.precision) == ("fp32",) * 3
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    for capability, want in (((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert precision.resolve("auto", torch.device("cuda")) == want, capability


def test_the_resolved_precision_is_logged_and_keyed(runner, client, tree, monkeypatch):
    _machine(monkeypatch, NONE)
    invoke(runner, ["baseline", *T, "--data-dir", tree])
    invoke(runner, ["baseline", *T, "--data-dir", tree])  # same machine: reused
    _machine(monkeypatch, AMX)
    invoke(runner, ["baseline", *T, "--data-dir", tree])  # bf16 now: never the fp32 result
    exp = client.get_experiment_by_name("harness").experiment_id
    runs = client.search_runs([exp], order_by=["attributes.start_time ASC"])
    assert [r.data.params["classifier.precision"] for r in runs] == ["fp32", "fp32", "bf16"]
    assert runs[1].data.tags["harness.reused_from"] == runs[0].info.run_id
    assert "harness.reused_from" not in runs[2].data.tags
    assert runs[2].data.tags["harness.cache_key"] != runs[0].data.tags["harness.cache_key"]
    assert "bf16 autocast" in runs[2].data.tags["mlflow.note.content"]
    assert "bf16" not in runs[0].data.tags["mlflow.note.content"]
    # Weights on disk stay float32 under bf16.
    state = torch.load(client.download_artifacts(runs[2].info.run_id, "model/model.pt"), weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["state_dict"].values() if v.is_floating_point())


def test_bf16_classifier_trains_close_to_fp32_with_fp32_weights():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(192) % 3
    x = (torch.tensor([[200, 60, 60], [60, 200, 60], [60, 60, 200]])[y][:, :, None, None]
         + torch.randn(192, 3, 32, 32, generator=g) * 40).clamp(0, 255).to(torch.uint8)
    base = dataclasses.replace(config.load("tiny").classifier, epochs=3)
    a, ha = train.train_classifier(x, y, 3, dataclasses.replace(base, precision="fp32"), torch.device("cpu"))
    b, hb = train.train_classifier(x, y, 3, dataclasses.replace(base, precision="bf16"), torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in b.parameters())
    assert ha.epochs != hb.epochs  # bf16 arithmetic did run
    assert hb.epochs[-1]["train/loss"] == pytest.approx(ha.epochs[-1]["train/loss"], rel=0.1)


def test_a_bf16_gan_writes_fp32_checkpoints(runner, client, tree):
    invoke(runner, ["generator", *T, "--data-dir", tree, "--set", "gan.precision=bf16"])
    exp = client.get_experiment_by_name("harness").experiment_id
    (run,) = client.search_runs([exp], "tags.`harness.phase` = 'generator'")
    assert run.data.params["gan.precision"] == "bf16"
    for path in ("checkpoints/training_state_0.pt", "checkpoints/generator_epoch_0002.pt"):
        state = torch.load(client.download_artifacts(run.info.run_id, path), weights_only=True)
        tensors = [v for part in state.values() if isinstance(part, dict) for v in part.values()
                   if isinstance(v, torch.Tensor) and v.is_floating_point()]
        assert tensors and all(v.dtype == torch.float32 for v in tensors), path


def test_a_grid_keeps_auto_in_its_plan_and_each_worker_resolves_it(runner, client, tree, tmp_path, monkeypatch):
    _machine(monkeypatch, NONE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    invoke(runner, ["grid", *T, "--data-dir", tree, "--axis", "pseudolabel.threshold=0.0,0.5", "--seeds", "1",
                    "--study", "p", "--storage", storage])
    study = optuna.load_study(study_name="p", storage=storage)
    from harness import grid
    assert grid.plan_of(study)[0].classifier.precision == "auto"
    exp = client.get_experiment_by_name("harness").experiment_id
    pipes = client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")
    assert len(pipes) == 2 and {p.data.params["classifier.precision"] for p in pipes} == {"fp32"}


def test_the_gan_under_auto_resolves_in_the_loop_too(monkeypatch):
    """A loop handed an unresolved config (library use, benchmarks) resolves it itself."""
    def saved_dtypes(caps) -> set:
        _machine(monkeypatch, caps)
        g = dataclasses.replace(config.load("tiny").gan, precision="auto")
        trainer = gan.WganGp(g, torch.device("cpu"))
        x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
        seen = set()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: (seen.add(t.dtype), t)[1], lambda t: t):
            trainer.train_epoch(x)
        return seen

    assert torch.bfloat16 not in saved_dtypes(NONE)
    assert torch.bfloat16 in saved_dtypes(AMX)
