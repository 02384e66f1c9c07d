"""Generator kinds behind one protocol: prefix-consistent streams, what each kind draws, every kind
end to end on the tiny preset, and a new kind added with one module + one registry entry."""
import math
import dataclasses
import types

import numpy as np
import pytest
import torch

from conftest import install_plugin, invoke
from harness import config, data, generators
from harness.context import Memo
from harness.generators import gan, stream

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]


class _Ctx:
    def __init__(self, splits):
        self.memo, self.device, self._splits = Memo(), torch.device("cpu"), splits

    def splits(self, data_cfg):
        return self._splits


def _splits(tree, n_per_class=20, val_per_class=10):
    cfg = config.load("tiny", ["data.classes=airplane,automobile,bird", f"data.n_per_class={n_per_class}",
                               f"data.val_per_class={val_per_class}"])
    return cfg, data.load_splits(cfg.data, tree)


def test_noise_stream_is_prefix_consistent():
    # Every sample count is a prefix of one stream: what lets a sweep extend one pool per checkpoint.
    full = stream.noise(3, 0, 1000, 16)
    assert torch.equal(stream.noise(3, 0, 300, 16), full[:300])
    assert torch.equal(stream.noise(3, 250, 700, 16), full[250:700])
    assert not torch.equal(stream.noise(4, 0, 300, 16), full[:300])
    from harness.generators.dcgan import Generator
    g = Generator(16, 8)
    a, _ = gan.generate(g, 16, 3, torch.device("cpu"), 0, 600)
    b, _ = gan.generate(g, 16, 3, torch.device("cpu"), 0, 200)
    c, _ = gan.generate(g, 16, 3, torch.device("cpu"), 200, 600)
    assert torch.equal(a, torch.cat([b, c]))


@pytest.mark.parametrize("kind", ["oracle", "mixup", "noise", "replay"])
def test_kinds_draw_prefix_consistent_streams(tree, kind):
    cfg, splits = _splits(tree)
    cfg = config.apply(cfg, {"generator.kind": kind})
    ctx = _Ctx(splits)
    sampler = generators.get(kind).sampler(ctx, cfg, splits)
    first, labels = stream.take(ctx.memo, sampler, 20)
    more, more_labels = stream.take(ctx.memo, sampler, 30)  # extends the memo's stream by 10
    assert torch.equal(more[:20], first) and more.dtype == torch.uint8 and more.shape[1:] == (3, 32, 32)
    fresh = generators.get(kind).sampler(_Ctx(splits), cfg, splits).draw(0, 30)[0]
    assert torch.equal(fresh, more)  # the same images however they were asked for
    assert (labels is None) == (not generators.get(kind).knows_classes(cfg))
    other = generators.get(kind).sampler(_Ctx(splits), config.apply(cfg, {"generate.seed": 1}), splits).draw(0, 30)[0]
    assert not torch.equal(other, more)


def test_oracle_draws_real_images_disjoint_from_train_val_test(tree):
    cfg, splits = _splits(tree)
    cfg = config.apply(cfg, {"generator.kind": "oracle", "generate.n_samples": 30})
    images, labels = generators.get("oracle").sampler(_Ctx(splits), cfg, splits).draw(0, 30)

    def rows(x):
        return {bytes(img) for img in x.numpy()}

    drawn = rows(images)
    assert len(drawn) == 30
    source = data.open_source(tree)
    real = torch.from_numpy(np.concatenate([source.images("train", c) for c in splits.classes])).permute(0, 3, 1, 2)
    assert drawn <= rows(real.contiguous()), "oracle images are real training images"
    for split in ("train", "val", "test"):
        assert not drawn & rows(getattr(splits, f"{split}_x")), split
    # their labels are the true classes: each image sits in its class's pool
    for img, y in zip(images, labels):
        assert bytes(img.numpy()) in rows(splits.pool_x[splits.pool_y == y])


def test_replay_draws_the_training_images_themselves_once_per_pass(tree):
    """The recipe's control: the images and labels the baseline trains on, each once per pass over
    them, a new order every pass."""
    cfg, splits = _splits(tree)
    n = len(splits.train_x)
    images, labels = generators.get("replay").sampler(_Ctx(splits), cfg, splits).draw(0, 2 * n + 5)
    train = {bytes(img): int(y) for img, y in zip(splits.train_x.numpy(), splits.train_y)}
    for p in range(2):
        one = [bytes(img) for img in images[p * n:(p + 1) * n].numpy()]
        assert sorted(one) == sorted(train)  # every training image, once
    assert [train[bytes(img)] for img in images.numpy()] == labels.tolist()  # with its own label
    assert not torch.equal(images[:n], images[n:2 * n])


def test_noise_fits_per_class_statistics_and_mixup_blends_pairs(tree):
    cfg, splits = _splits(tree)
    images, labels = generators.get("noise").sampler(_Ctx(splits), cfg, splits).draw(0, 600)
    assert np.bincount(labels.numpy()).tolist() == [200, 200, 200]
    for c in range(3):
        want = splits.train_x[splits.train_y == c].float().mean((0, 2, 3))
        got = images[labels == c].float().mean((0, 2, 3))
        assert torch.allclose(got, want, atol=8), (c, got, want)  # per-channel means of the class
    # A tiny alpha puts almost all weight on one image of each pair: near-copies of real images.
    near = config.apply(cfg, {"generator.mixup_alpha": 0.01})
    mixed, none = generators.get("mixup").sampler(_Ctx(splits), near, splits).draw(0, 50)
    assert none is None
    dist = (mixed[:, None].float() - splits.train_x[None].float()).abs().amax((2, 3, 4)).amin(1)
    assert (dist <= 2).float().mean() > 0.9
    from harness import quality  # the memorization check sees them as the copies they are
    assert quality.memorization(mixed, splits.train_x)[0]["memorization/near_copy_share"] > 0.9
    # alpha 1: blends, mostly far from every single real image
    mixed, _ = generators.get("mixup").sampler(_Ctx(splits), cfg, splits).draw(0, 50)
    dist = (mixed[:, None].float() - splits.train_x[None].float()).abs().amax((2, 3, 4)).amin(1)
    assert (dist > 2).float().mean() > 0.5


@pytest.mark.parametrize("kind,extra", [("oracle", ["--set", "generate.n_samples=24"]), ("mixup", []),
                                        ("noise", ["--set", "pseudolabel.mode=none"]), ("replay", [])])
def test_every_kind_end_to_end(runner, client, tree, kind, extra):
    out = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", f"generator.kind={kind}",
                          *extra]).output
    exp = client.get_experiment_by_name("harness")
    (pipe,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pipeline'")
    kids = {r.data.tags["harness.phase"]: r for r in
            client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{pipe.info.run_id}'")}
    # Kinds that do not train have no generator phase; the rest is the GAN's path.
    assert sorted(kids) == ["baseline", "compare", "control", "generate", "pseudolabel", "synthetic"]
    assert all(r.info.status == "FINISHED" for r in kids.values())
    n = 24 if kind == "oracle" else 64
    assert kids["generate"].data.metrics["generate/n_samples"] == n
    assert kids["synthetic"].data.metrics["data/n_synthetic"] == kids["pseudolabel"].data.metrics["kept/count"]
    assert f"generator `{kind}`" in pipe.data.tags["mlflow.note.content"] and "| Accuracy |" in out
    # Real images the classifier never saw are no copies of its training images; noise is none either;
    # replayed ones are nothing else.
    share = kids["generate"].data.metrics["memorization/near_copy_share"]
    assert share == {"oracle": 0.0, "noise": 0.0, "replay": 1.0}.get(kind, share) and 0.0 <= share <= 1.0


def test_oracle_asking_for_more_than_the_pool_is_refused_before_any_run(runner, client, tree):
    result = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=oracle",
                             "--set", "generate.n_samples=31"], ok=False)
    assert result.exit_code == 2 and "30 beyond train and validation" in result.output
    exp = client.get_experiment_by_name("harness")
    assert client.search_runs([exp.experiment_id]) == []


def test_kind_settings_are_checked(runner):
    for setting, message in [("generator.kind=vae", "generator.kind must be one of gan, diffusion, oracle, mixup, noise, replay, folder, text2image"),
                             ("pseudolabel.mode=filter", "needs a generator that knows its images' classes"),
                             ("generator.mixup_alpha=0", "generator.mixup_alpha must be > 0")]:
        result = invoke(runner, ["baseline", "--preset", "tiny", "--set", setting], ok=False)
        assert result.exit_code == 2 and message in result.output, setting


PLUGIN = '''
from dataclasses import dataclass
import torch
from harness.config import SEED_MAX, setting
from harness.generators import stream
TRAINS, SECTIONS, DATA = False, (), ("train",)
CLASSES, NEEDS = "always", "nothing"

@dataclass(frozen=True)
class CONFIG:  # its own section, [grey]
    level: int = setting(128, ge=0, le=255)  # the grey of every image
    seed: int = setting(0, ge=0, le=SEED_MAX, seed=True)

def knows_classes(cfg):
    return True
def sampler(ctx, cfg, splits):
    def draw(start, stop):
        return (torch.full((stop - start, 3, 32, 32), cfg.grey.level, dtype=torch.uint8),
                stream.balanced_labels(start, stop, len(splits.classes)))
    return stream.Sampler(("grey",), draw, 0, "grey squares")
'''


def _install_plugin(root, monkeypatch):
    install_plugin(root, "harness_grey_plugin", PLUGIN, "harness.generators", "grey", monkeypatch)


def test_a_plugin_kind_from_an_entry_point_runs_is_listed_and_fingerprinted(runner, client, tree, tmp_path, monkeypatch):
    """A kind that draws grey images of every class in turn, installed as a distribution, with a config
    section of its own declared beside its fields: set, checked, seeded and keyed like a built-in one."""
    from harness import pipeline, table
    base = config.load("tiny", ["generator.kind=oracle"])
    before_install = config.config_hash(base)
    _install_plugin(tmp_path / "site", monkeypatch)
    assert config.config_hash(base) == before_install  # installing a plugin changes no other config's hash
    listed = invoke(runner, ["kinds"]).output
    assert "grey" in listed and "plugin (harness_grey_plugin)" in listed and "text2image" in listed
    cfg = config.load("tiny", ["generator.kind=grey", "grey.level=100"])
    assert cfg.grey.level == 100 and pipeline.seeded(cfg, 7).grey.seed == 7 and "grey.seed" in config.fields_where("seed")
    assert "grey" not in config.sweepable_sections() and config.flat(cfg)["grey.level"] == "100"
    generate = table.PHASES["generate"]
    assert "grey" in generate.reads(cfg)[0]
    assert config.config_hash(cfg, generate.reads(cfg)[0]) != config.config_hash(
        config.apply(cfg, {"grey.level": 128}), generate.reads(cfg)[0])
    bad = invoke(runner, ["config", "--preset", "tiny", "--set", "grey.level=300"], ok=False)
    assert bad.exit_code == 2 and "grey.level must be in [0, 255], got 300" in bad.output
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=grey",
                    "--set", "pseudolabel.mode=none", "--set", "grey.level=100"])
    exp = client.get_experiment_by_name("harness")
    (gen,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'")
    assert gen.data.params["grey.level"] == "100"
    kept = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pseudolabel'")[0]
    assert "grey squares" in gen.data.tags["mlflow.note.content"]
    assert kept.data.metrics["kept/count"] == 64 and kept.data.metrics["kept/bird/count"] == 21
    from harness.tracking import provenance
    before = provenance.fingerprint(("harness.phases.generate", "harness_grey_plugin"))
    assert "harness_grey_plugin" in provenance.closure(("harness.phases.generate", "harness_grey_plugin"))
    (tmp_path / "site" / "harness_grey_plugin.py").write_text(PLUGIN.replace("128", "127"))
    assert provenance.fingerprint(("harness.phases.generate", "harness_grey_plugin")) != before


def test_a_shared_generator_is_trained_once_even_without_the_cache(runner, client, tree):
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--seeds", "2", "--share-generator", "--no-cache"])
    exp = client.get_experiment_by_name("harness")
    gens = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generator'")
    assert len(gens) == 2 and sum("harness.reused_from" in g.data.tags for g in gens) == 1
    bases = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'baseline'")
    assert not any("harness.reused_from" in b.data.tags for b in bases)  # everything else recomputed


# ---------------------------------------------------------------------------------------------
# Speed-ups of the GAN loop: the same training in eager mode, only faster (issue 17)

def _train_toy_gan(epochs=3, **fields):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(128) % 3
    x = (torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220]])[y][:, :, None, None]
         + torch.randn(128, 3, 32, 32, generator=g) * 25).clamp(0, 255).to(torch.uint8)
    fields.setdefault("precision", "fp32")  # the arithmetic these tests compare against, whatever the machine
    cfg = dataclasses.replace(config.load("tiny").gan, width=8, latent_dim=16, batch_size=32, **fields)
    trainer = gan.WganGp(cfg, torch.device("cpu"), n_classes=3)
    rows = [trainer.train_epoch(x, y) for _ in range(epochs)]
    return trainer, rows


OFF = {"one_pass": False, "channels_last": False, "fused_adam": False}  # the loop as the reference wrote it


@pytest.mark.parametrize("base", [
    {},  # the reference: WGAN-GP, 5 critic steps, full-batch penalty
    {"conditional": "projection", "diffaugment": "color,translation,cutout", "gp_fraction": 0.5},
    {"conditional": "acgan", "critic_steps": 1},
])
@pytest.mark.parametrize("speedup", [{"one_pass": True}, {"channels_last": True}, {"fused_adam": True},
                                     {"one_pass": True, "channels_last": True, "fused_adam": True}])
def test_speedups_train_the_same_gan(base, speedup):
    plain, rows_a = _train_toy_gan(**base, **OFF)
    fast, rows_b = _train_toy_gan(**base, **{**OFF, **speedup})
    # Same random draws in the same order, same arithmetic up to float summation order.
    for (k, a), b in zip(plain.generator.state_dict().items(), fast.generator.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), k
    for ra, rb in zip(rows_a, rows_b):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-3, abs=1e-4), k
    z = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 3
    assert (plain.sample(z, labels).int() - fast.sample(z, labels).int()).abs().max() <= 2


def test_compiled_gan_keeps_its_checkpoint_keys():
    pytest.importorskip("torch._inductor")
    plain, _ = _train_toy_gan(epochs=1, loss="hinge", gp_weight=0.0, critic_steps=1, spectral_norm=True)
    fast, _ = _train_toy_gan(epochs=1, loss="hinge", gp_weight=0.0, critic_steps=1, spectral_norm=True, compile=True)
    assert fast.state_dict()["generator"].keys() == plain.state_dict()["generator"].keys()
    assert fast.state_dict()["critic"].keys() == plain.state_dict()["critic"].keys()


@pytest.mark.parametrize("base", [{}, {"conditional": "acgan", "critic_steps": 1, "loss": "hinge", "gp_weight": 0.0,
                                       "spectral_norm": True}])
def test_bf16_autocast_trains_close_to_fp32_and_keeps_fp32_weights(base):
    plain, rows_a = _train_toy_gan(**base)
    half, rows_b = _train_toy_gan(**base, precision="bf16")
    assert all(p.dtype == torch.float32 for p in half.generator.parameters())
    assert all(p.dtype == torch.float32 for p in half.critic.parameters())
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys() and all(map(math.isfinite, rb.values()))
        assert ra != rb  # bf16 arithmetic did run
    # bf16 has 8 bits of mantissa: the same training, not the same numbers (3 epochs in, the
    # generators' weights still agree to a few percent of their scale)
    for (k, a), b in zip(plain.generator.state_dict().items(), half.generator.state_dict().values()):
        if a.dim() > 1:  # weights; a bias starts at 0 and moves by Adam-sized steps only
            assert (a - b).norm() <= 0.1 * a.norm(), k


# ---------------------------------------------------------------------------------------------
# Images from outside: a folder of any tool's images, a pretrained text-to-image pipeline (issue 22)

def _generated_folder(root, classes=("airplane", "automobile", "bird"), n=30):
    from conftest import write_tree
    write_tree(root.parent / "gen-src", n_train=n, n_test=1, seed=7)
    for name in classes:
        (root / name).mkdir(parents=True)
        for p in sorted((root.parent / "gen-src" / "train" / name).iterdir()):
            p.rename(root / name / p.name)
    return root


def test_a_folder_of_class_images_is_keyed_by_content_not_path(runner, client, tree, tmp_path):
    gen = _generated_folder(tmp_path / "gen")
    args = ["generate", "--preset", "tiny", "--data-dir", tree, "--set", "generator.kind=folder",
            "--set", "pseudolabel.mode=filter"]
    invoke(runner, args + ["--set", f"generator.folder={gen}"])
    import shutil
    copy = shutil.copytree(gen, tmp_path / "elsewhere")
    invoke(runner, args + ["--set", f"generator.folder={copy}"])
    exp = client.get_experiment_by_name("harness")
    runs = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'", order_by=["start_time ASC"])
    assert len(runs) == 2 and runs[1].data.tags["harness.reused_from"] == runs[0].info.run_id
    inputs = runs[0].inputs.dataset_inputs
    assert [t.value for d in inputs for t in d.tags] == ["generated"] and "gen" in inputs[0].dataset.source
    (next((copy / "bird").iterdir())).write_bytes((next((gen / "airplane").iterdir())).read_bytes())
    invoke(runner, args + ["--set", f"generator.folder={copy}"])
    newest = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'", order_by=["start_time DESC"])[0]
    assert "harness.reused_from" not in newest.data.tags  # one changed image: another generator


def test_a_tiny_text2image_pipeline_gives_the_same_images_twice_and_prefixes(tmp_path):
    import tiny_diffusers

    from harness.context import Context
    model = tiny_diffusers.build(tmp_path / "t2i")
    cfg = config.load("tiny", [f"text2image.model={model}", "generator.kind=text2image", "text2image.steps=2",
                               "text2image.batch_size=4"])
    splits = types.SimpleNamespace(classes=cfg.data.classes, train_x=None, train_y=None)
    from harness.generators import text2image
    ctx = Context(None, torch.device("cpu"))
    a, ya = text2image.sampler(ctx, cfg, splits).draw(0, 10)
    b, _ = text2image.sampler(Context(None, torch.device("cpu")), cfg, splits).draw(0, 6)
    assert a.shape == (10, 3, 32, 32) and a.dtype == torch.uint8 and ya.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert torch.equal(a[:6], b) and not torch.equal(a[0], a[3])


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_text2image_end_to_end_logs_prompts_and_is_keyed_on_the_weights(runner, client, tree, tmp_path, mode):
    """The whole study with a tiny random pipeline on disk: both modes, their records, and a key that
    follows the weights' content (the local folder's digest) rather than the path."""
    import json

    import tiny_diffusers
    model = tiny_diffusers.build(tmp_path / "t2i")
    args = ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=text2image",
            "--set", f"text2image.model={model}", "--set", "text2image.steps=2", "--set", "text2image.batch_size=8",
            "--set", f"text2image.mode={mode}", "--set", "generate.n_samples=24", "--set", "pseudolabel.mode=none",
            "--set", "text2image.prompts=bird=a small bird"]
    invoke(runner, args)
    exp = client.get_experiment_by_name("harness")
    (gen,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'")
    kept = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pseudolabel'")[0]
    assert kept.data.metrics["kept/count"] == 24 and kept.data.metrics["kept/bird/count"] == 8
    files = {f.path for f in client.list_artifacts(gen.info.run_id)}
    prompts = json.loads(open(client.download_artifacts(gen.info.run_id, "prompts.json")).read())
    assert prompts["prompts"] == {"airplane": "a photo of a airplane", "automobile": "a photo of a automobile",
                                  "bird": "a small bird"} and prompts["revision"].startswith("sha256:")
    if mode == "img2img":
        assert {"img2img_sources.json", "img2img_pairs.png"} <= files
        src = json.loads(open(client.download_artifacts(gen.info.run_id, "img2img_sources.json")).read())
        assert len(src["train_index"]) == 24 and src["class"][:3] == ["airplane", "automobile", "bird"]
        assert "harness.data.train" in gen.data.tags  # the real images it started from are in its key
    else:
        assert "img2img_sources.json" not in files
    invoke(runner, args)  # the same model: reused
    # The same pipeline saved again with other weights at the same path: another generator.
    import shutil
    shutil.rmtree(model.parent)
    tiny_diffusers.build(tmp_path / "t2i", seed=1)
    invoke(runner, args)
    runs = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'", order_by=["start_time ASC"])
    assert len(runs) == 3 and runs[1].data.tags.get("harness.reused_from") == runs[0].info.run_id
    assert "harness.reused_from" not in runs[2].data.tags


def test_the_example_script_writes_a_folder_the_folder_kind_judges(runner, client, tree, tmp_path):
    """examples/text2image_folder.py on the tiny pipeline, then that folder as generator.kind=folder."""
    import importlib.util
    from pathlib import Path

    import tiny_diffusers
    model = tiny_diffusers.build(tmp_path / "t2i")
    spec = importlib.util.spec_from_file_location(
        "text2image_folder", Path(__file__).resolve().parents[1] / "examples" / "text2image_folder.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "generated"
    common = ["--model", str(model), "--classes", "airplane,automobile,bird", "--out", str(out), "--steps", "2",
              "--batch-size", "4"]
    example.main([*common, "--per-class", "3"])
    first = (out / "bird" / "bird_00000.png").read_bytes()
    example.main([*common, "--per-class", "5"])  # a rerun with more keeps the first images
    assert sorted(p.name for p in (out / "bird").iterdir()) == [f"bird_{i:05d}.png" for i in range(5)]
    assert (out / "bird" / "bird_00000.png").read_bytes() == first
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=folder",
                    "--set", f"generator.folder={out}", "--set", "generate.n_samples=15",
                    "--set", "pseudolabel.mode=filter"])
    exp = client.get_experiment_by_name("harness")
    (gen,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'generate'")
    assert gen.data.metrics["generate/n_samples"] == 15
    (pipe,) = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pipeline'")
    assert pipe.info.status == "FINISHED"


def test_a_flat_folder_is_labelled_by_the_baseline(runner, client, tree, tmp_path):
    flat = tmp_path / "flat"
    import shutil
    shutil.copytree(tree / "train" / "cat", flat)
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=folder",
                    "--set", f"generator.folder={flat}", "--set", "generate.n_samples=40"])
    exp = client.get_experiment_by_name("harness")
    kept = client.search_runs([exp.experiment_id], "tags.`harness.phase` = 'pseudolabel'")[0]
    # tiny's threshold is 0: the baseline labels all 40 with one of its three classes
    assert kept.data.metrics["kept/count"] == 40
    assert sum(kept.data.metrics[f"kept/{c}/count"] for c in ("airplane", "automobile", "bird")) == 40


# ---------------------------------------------------------------------------------------------
# The diffusion kind (a UNet of width 8: seconds)

def _tiny_diffusion(**changes):
    return dataclasses.replace(config.load("tiny").diffusion, **changes)


def test_a_tiny_diffusion_model_trains_resumes_exactly_and_samples_its_classes():
    from harness.generators import diffusion
    d = _tiny_diffusion(prediction="v_prediction", label_dropout=0.5)
    real = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(48) % 3
    trainer = diffusion.Denoiser(d, torch.device("cpu"), 3)
    first = trainer.train_epoch(real, labels)
    assert trainer.steps == 3 and trainer.epoch == 1 and math.isfinite(first["diffusion/loss"])
    import copy
    state = copy.deepcopy(trainer.state_dict())
    again = trainer.train_epoch(real, labels)
    resumed = diffusion.Denoiser(d, torch.device("cpu"), 3)
    resumed.load_state_dict(state)  # what --resume does: the next epoch is the one it would have been
    assert resumed.train_epoch(real, labels) == again
    assert trainer.train_epoch(real, labels, max_steps=8) and trainer.steps == 8  # the budget stops mid-epoch
    images, classes = diffusion.generate(trainer.sampler, d, 3, torch.device("cpu"), 0, 10, 2, 0.0)
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.uint8
    assert classes.tolist() == [i % 3 for i in range(10)]  # balanced in any prefix
    guided, _ = diffusion.generate(trainer.sampler, d, 3, torch.device("cpu"), 0, 10, 2, 2.0)
    assert not torch.equal(guided, images)  # guidance moves away from the class-free prediction


def test_diffusion_streams_are_prefix_consistent():
    from harness.generators import diffusion
    d = _tiny_diffusion()
    net = diffusion.unet(d, 3, 3, 32)
    whole, _ = diffusion.generate(net, d, 5, torch.device("cpu"), 0, 300, 2, 0.0)
    head, _ = diffusion.generate(net, d, 5, torch.device("cpu"), 0, 100, 2, 0.0)
    tail, labels = diffusion.generate(net, d, 5, torch.device("cpu"), 100, 300, 2, 0.0)
    assert torch.equal(whole, torch.cat([head, tail])) and labels.tolist() == [i % 3 for i in range(100, 300)]
    other, _ = diffusion.generate(net, d, 6, torch.device("cpu"), 0, 100, 2, 0.0)
    assert not torch.equal(other, head)


def test_diffusion_end_to_end_picks_the_lowest_fd_checkpoint_and_logs_loadable_models(runner, client, tree):
    import mlflow
    invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=diffusion",
                    "--set", "quality.enabled=true", "--set", "quality.evaluator_epochs=1", "--set", "quality.n_samples=16",
                    "--set", "generate.checkpoint_epoch=-1", "--set", "pseudolabel.mode=filter"])
    exp = client.get_experiment_by_name("harness").experiment_id
    runs = {r.data.tags["harness.phase"]: r for r in client.search_runs([exp])}
    gen = runs["generator"]
    fd = client.get_metric_history(gen.info.run_id, "quality/fd")
    assert [m.step for m in fd] == [1, 2]  # one measurement per checkpoint, through the shared loop
    assert runs["generate"].data.params["generate.checkpoint_used"] == str(min(fd, key=lambda m: m.value).step)
    assert gen.data.metrics["diffusion/steps_total"] == 6 and "diffusion/loss" in gen.data.metrics
    arts = {a.path for a in client.list_artifacts(gen.info.run_id, "checkpoints")}
    assert {"checkpoints/training_state_0.pt", "checkpoints/generator_epoch_0002.pt"} <= arts
    models = mlflow.search_logged_models(experiment_ids=[exp], output_format="list",
                                         filter_string=f"source_run_id = '{gen.info.run_id}'")
    assert len(models) == 2
    net = mlflow.pytorch.load_model(models[0].model_uri)  # pickle-free: noisy image, timestep, class per row
    z = torch.cat([torch.randn(2, 3 * 32 * 32), torch.tensor([[500.0, 0.0], [10.0, 3.0]])], 1)
    assert net(z).shape == (2, 3, 32, 32)
    assert "diffusion model" in runs["pipeline"].data.tags["mlflow.note.content"]
    # Generate-time settings are the generate phase's: another DDIM step count samples the same model.
    invoke(runner, ["generate", "--preset", "tiny", "--data-dir", tree, *CLASSES, "--set", "generator.kind=diffusion",
                    "--set", "quality.enabled=true", "--set", "quality.evaluator_epochs=1", "--set", "quality.n_samples=16",
                    "--set", "generate.checkpoint_epoch=-1", "--set", "diffusion.sample_steps=3"])
    generators_trained = [r for r in client.search_runs([exp], "tags.`harness.phase` = 'generator'")]
    assert len(generators_trained) == 1


def test_fifty_thousand_images_cost_their_own_memory_and_one_batch(runner, client, tree, tmp_path):
    """generate.n_samples=50,000 at 32 px (146 MiB of uint8 images): the generate command's peak resident
    memory grows by at most 1.5 times the images' own size over a 64-image draw (a list of batches joined
    at the end held them twice, and the noise for all of them at once: 3.8 times, measured), and the
    images are those of the stream a smaller draw starts (prefix-consistent)."""
    import os
    import subprocess
    import sys

    from harness.tracking import codecs
    args = ["--preset", "tiny", "--data-dir", str(tree), "--set", "data.classes=airplane,automobile,bird"]
    invoke(runner, ["generator", *args])

    def peak_mib(n: int) -> float:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "generate", *args, "--set", f"generate.n_samples={n}"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-2000:]
        return usage.ru_maxrss / 1024
    small, large = peak_mib(64), peak_mib(50_000)
    images = 50_000 * 3 * 32 * 32 / 2 ** 20
    assert large - small < 1.5 * images, (small, large)
    runs = client.search_runs([client.get_experiment_by_name("harness").experiment_id],
                              "tags.`harness.phase` = 'generate'", order_by=["attributes.start_time ASC"])
    few, many = (codecs.load_npz(r.info.run_id, "synthetic.npz")["images"] for r in runs)
    assert len(many) == 50_000 and np.array_equal(many[:64], few)
