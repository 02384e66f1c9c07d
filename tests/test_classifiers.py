"""harness/classifiers: every built-in kind trains both arms end to end on the tiny preset and its
checkpoint loads back as the same network; torchvision and timm models by name; a plugin kind from an
entry point; the chosen kind's module in the keys of the phases that build it, and in no generator's."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from conftest import install_plugin, invoke
from harness import arms, classifiers, config, table
from harness.tracking import provenance

CLASSES = ["--set", "data.classes=airplane,automobile,bird"]
# generator.kind=noise: nothing to train on that side; every classifier phase runs.
CHEAP = ["--preset", "tiny", *CLASSES, "--set", "generator.kind=noise", "--set", "classifier.epochs=1"]


@pytest.mark.parametrize("kind", ["resnet18", "airbench", "torchvision:mobilenet_v3_small", "timm:test_efficientnet"])
def test_every_kind_trains_both_arms_and_loads_back(runner, client, tree, kind):
    if kind.startswith("timm:"):
        pytest.importorskip("timm")
    invoke(runner, ["run", *CHEAP, "--data-dir", tree, "--set", f"classifier.kind={kind}", "--set", "classifier.width=8"])
    exp = client.get_experiment_by_name("harness").experiment_id
    for phase in ("baseline", "synthetic"):
        (run,) = client.search_runs([exp], f"tags.`harness.phase` = '{phase}'")
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test/accuracy"] <= 1
        assert classifiers.in_words(config.load("tiny", [f"classifier.kind={kind}", "classifier.width=8"]).classifier) \
            in run.data.tags["mlflow.note.content"]
    from harness.arms import load_model
    (base,) = client.search_runs([exp], "tags.`harness.phase` = 'baseline'")
    model, classes = load_model(base.info.run_id)  # rebuilt from the kind its checkpoint records
    assert model.kind == kind and classes == ["airplane", "automobile", "bird"]
    assert model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3)
    (pipe,) = client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")
    assert "which labels the synthetic images" in pipe.data.tags["mlflow.note.content"]


def test_the_reference_kind_is_the_simplecnn_it_was():
    """simplecnn builds the network the harness always trained, consuming the seed the same way."""
    from harness.classifiers.simplecnn import SimpleCNN
    torch.manual_seed(0)
    old = SimpleCNN(3).state_dict()
    torch.manual_seed(0)
    new = classifiers.build(config.Config().classifier, 3, 3, 32).state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_airbench_whitens_from_the_data_and_freezes_it():
    from harness.classifiers import airbench
    cfg = config.apply(config.Config(), {"classifier.kind": "airbench", "classifier.width": 8}).classifier
    model = classifiers.build(cfg, 3, 3, 32)
    before = model.backbone[0].weight.clone()
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    classifiers.fit_data(cfg, model, x)
    conv = model.backbone[0]
    with torch.no_grad():
        whitened = torch.nn.functional.conv2d(model.normalize(x), conv.weight)  # without the (trained) bias
    assert not torch.equal(before, conv.weight) and not conv.weight.requires_grad
    # Half the filters whiten the 2x2 patches (unit variance along each eigenvector), the other half negate them.
    half = whitened[:, : whitened.shape[1] // 2]
    assert half.var(dim=(0, 2, 3)).mean().item() == pytest.approx(1.0, rel=0.2)
    assert airbench.SCALE == pytest.approx(1 / 9)


@pytest.mark.parametrize("kind,says", [("nosuch", "classifier.kind must be one of simplecnn, resnet18, airbench"),
                                        ("torchvision:nosuchnet", "torchvision has no model 'nosuchnet'"),
                                        ("torchvision:vit_b_16", "cannot take 32 px images")])
def test_a_kind_that_cannot_run_is_refused_before_anything_opens(runner, client, tree, kind, says):
    result = invoke(runner, ["run", *CHEAP, "--data-dir", tree, "--set", f"classifier.kind={kind}"], ok=False)
    assert result.exit_code == 2 and says in result.stderr and "Traceback" not in result.output
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


PLUGIN = '''
"""A classifier kind from outside: the mean colour of the image, scaled, then a linear layer."""
from dataclasses import dataclass

import torch
from harness.classifiers.net import Classifier
from harness.config import setting

NAME = "MeanColour"


@dataclass(frozen=True)
class CONFIG:  # its own section, [mean]
    scale: float = setting(1.0, gt=0.0)


class _Mean(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.scale


def build(settings, n_classes, channels, image_size, section=CONFIG()):
    return Classifier(settings.kind, settings.width, _Mean(section.scale), torch.nn.Linear(channels, n_classes),
                      channels, image_size)
'''


def test_a_plugin_classifier_from_an_entry_point_runs_a_pipeline_and_is_keyed(runner, client, tree, tmp_path,
                                                                              monkeypatch):
    site = tmp_path / "site"
    install_plugin(site, "harness_mean_plugin", PLUGIN, "harness.classifiers", "mean", monkeypatch)
    assert "mean" in invoke(runner, ["kinds"]).output
    invoke(runner, ["run", *CHEAP, "--data-dir", tree, "--set", "classifier.kind=mean", "--set", "mean.scale=2"])
    exp = client.get_experiment_by_name("harness").experiment_id
    (base,) = client.search_runs([exp], "tags.`harness.phase` = 'baseline'")
    assert "MeanColour trained from scratch" in base.data.tags["mlflow.note.content"]
    # Its own section: in the arms' key, and in the checkpoint, which rebuilds the network it was trained as.
    assert base.data.params["mean.scale"] == "2.0" and arms.load_model(base.info.run_id)[0].backbone.scale == 2.0
    cfg = config.load("tiny", ["classifier.kind=mean"])
    arm = table.PHASES["baseline"]
    assert config.config_hash(cfg, arm.reads(cfg)[0]) != config.config_hash(
        config.apply(cfg, {"mean.scale": 2}), arm.reads(cfg)[0])
    before = provenance.fingerprint(table.PHASES["baseline"].code(cfg))
    (site / "harness_mean_plugin.py").write_text(PLUGIN.replace("x.mean(dim=(2, 3))", "x.mean(dim=(2, 3)) * 1"))
    assert provenance.fingerprint(table.PHASES["baseline"].code(cfg)) != before


def test_the_kind_is_in_the_keys_of_the_phases_that_build_it_and_no_generators(tmp_path):
    package = shutil.copytree(provenance.PACKAGE_DIR, tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    cfgs = {kind: config.load("tiny", [f"classifier.kind={kind}"]) for kind in ("simplecnn", "resnet18")}

    def prints():
        return {(kind, name): provenance.fingerprint(table.PHASES[name].code(c), root=package)
                for kind, c in cfgs.items() for name in table.PHASES}
    before = prints()
    path = package / "classifiers" / "resnet.py"
    path.write_text(path.read_text().replace("width = settings.width or 64", "width = settings.width or 65"))
    changed = {key for key, v in prints().items() if v != before[key]}
    assert changed == {("resnet18", "pretrain"), ("resnet18", "baseline"), ("resnet18", "pseudolabel"),
                       ("resnet18", "control"), ("resnet18", "synthetic"), ("resnet18", "control_stage"),
                       ("resnet18", "synthetic_stage")}


# ---------------------------------------------------------------------------------------------
# Where the weights come from (classifier.init) and how they train (classifier.mode)

RESNET = ["--set", "classifier.kind=resnet18", "--set", "classifier.width=8"]


def _torchvision_checkpoint(path, classes: int = 1000):
    """What a torchvision user has on disk: the raw network's state dict, its head for 1000 classes."""
    cfg = config.load("tiny", ["classifier.kind=resnet18", "classifier.width=8"]).classifier
    model = classifiers.build(cfg, classes, 3, 32)
    raw = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    raw |= {f"fc.{k.removeprefix('head.')}": v for k, v in model.state_dict().items() if k.startswith("head.")}
    torch.save(raw, path)
    return raw


@pytest.mark.parametrize("text, source, pretrained, outside, needs_store", [
    ("scratch", "scratch", False, False, False),
    ("pretrain", "pretrain", True, False, False),
    ("runs:/0123/model", "uri", True, True, True),
    ("models:/m-abc", "uri", True, True, True),
    ("models:/net/@champion", "uri", True, True, True),
    ("/tmp/w.pt", "file", True, True, False),
    ("weights.pt", "file", True, True, False),
])
def test_classifier_init_is_parsed_in_one_place(text, source, pretrained, outside, needs_store):
    # Every question the harness asks of classifier.init (cli, runner keys, table, pretrain, hub, weights)
    # is one of these answers.
    from harness.classifiers import weights
    init = weights.parse(text)
    assert (init.source, init.pretrained, init.outside, init.needs_store) == (source, pretrained, outside, needs_store)
    assert init.library_statistics == outside


def test_a_hub_network_keeps_the_input_statistics_its_weights_were_trained_with(tmp_path):
    # torchvision:resnet18 pretrained by the pretrain phase (built from scratch: the harness's statistics) and
    # fine-tuned (classifier.init=pretrain) normalises the same way in both; a harness checkpoint given as
    # a file brings its own statistics; a raw library checkpoint gets the library's (ImageNet's).
    from harness.classifiers import hub, weights
    cfg = config.load("tiny", ["classifier.kind=torchvision:resnet18"]).classifier

    def built(init):
        return classifiers.build(dataclasses.replace(cfg, init=init), 3, 3, 32)
    pretrained_net = built("scratch")
    fine_tuned = built("pretrain")
    weights.apply(fine_tuned, pretrained_net.state_dict(), "pretrain")
    for name in ("mean", "std"):
        assert torch.equal(getattr(fine_tuned.normalize, name), getattr(pretrained_net.normalize, name))
    torch.save(pretrained_net.state_dict(), tmp_path / "harness.pt")
    from_file = built(str(tmp_path / "harness.pt"))
    weights.apply(from_file, torch.load(tmp_path / "harness.pt", weights_only=True), "harness.pt")
    assert torch.equal(from_file.normalize.mean, pretrained_net.normalize.mean)
    raw = {k.removeprefix("backbone."): v for k, v in pretrained_net.state_dict().items() if k.startswith("backbone.")}
    library = built(str(tmp_path / "raw.pt"))
    weights.apply(library, raw, "raw.pt")
    assert torch.allclose(library.normalize.mean.flatten(), torch.tensor(hub.IMAGENET_MEAN) * 255)
    assert not torch.allclose(library.normalize.mean, pretrained_net.normalize.mean)


def test_a_weights_file_is_loaded_offline_and_its_content_is_the_key(runner, client, tree, tmp_path):
    raw = _torchvision_checkpoint(tmp_path / "w.pt")
    args = ["baseline", *CHEAP, "--data-dir", tree, *RESNET, "--set", f"classifier.init={tmp_path / 'w.pt'}"]
    invoke(runner, args)
    invoke(runner, args)  # the same weights: reused
    raw["layer1.0.conv1.weight"] = raw["layer1.0.conv1.weight"] + 1  # one tensor changed: a new key
    torch.save(raw, tmp_path / "w.pt")
    invoke(runner, args)
    exp = client.get_experiment_by_name("harness").experiment_id
    runs = client.search_runs([exp], "tags.`harness.phase` = 'baseline'", order_by=["attributes.start_time ASC"])
    assert ["harness.reused_from" in r.data.tags for r in runs] == [False, True, False]
    assert "fine-tuned from" in runs[0].data.tags["mlflow.note.content"]
    assert str(tmp_path) not in runs[0].data.tags.get("harness.cache_key", "")  # the content, not the path
    from harness.arms import load_model
    loaded, _ = load_model(runs[0].info.run_id)
    assert loaded.head.weight.shape == (3, 64)  # the 1000-class head was made anew for 3 classes


def test_a_probe_computes_the_real_features_once_for_both_arms(runner, client, tree, tmp_path, monkeypatch):
    from harness.classifiers import probe
    _torchvision_checkpoint(tmp_path / "w.pt")
    computed = []
    real = probe.compute
    monkeypatch.setattr(probe, "compute", lambda model, images, *a, **k: computed.append(len(images)) or
                        real(model, images, *a, **k))
    invoke(runner, ["run", *CHEAP, "--data-dir", tree, *RESNET, "--set", f"classifier.init={tmp_path / 'w.pt'}",
                    "--set", "classifier.mode=probe", "--set", "classifier.epochs=3"])
    # baseline: the real training and validation images; control: its 64 replayed training images; synthetic
    # arm: its kept images only
    assert computed == [60, 30, 64, 64]
    exp = client.get_experiment_by_name("harness").experiment_id
    base, syn = (client.search_runs([exp], f"tags.`harness.phase` = '{p}'")[0] for p in ("baseline", "synthetic"))
    assert "linear probe" in base.data.tags["mlflow.note.content"]
    from harness.arms import load_model
    start = torch.load(tmp_path / "w.pt", weights_only=True)
    trained, _ = load_model(syn.info.run_id)
    assert torch.equal(trained.state_dict()["backbone.layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])  # frozen


def test_a_logged_model_of_a_harness_run_serves_as_init_and_lpft_moves_the_backbone(runner, client, tree):
    invoke(runner, ["baseline", *CHEAP, "--data-dir", tree, *RESNET])
    exp = client.get_experiment_by_name("harness").experiment_id
    (model,) = client.search_logged_models(experiment_ids=[exp])
    invoke(runner, ["baseline", *CHEAP, "--data-dir", tree, *RESNET, "--set", f"classifier.init=models:/{model.model_id}",
                    "--set", "classifier.mode=probe-then-train", "--set", "classifier.epochs=2",
                    "--set", "classifier.backbone_lr=0.1"])
    runs = client.search_runs([exp], "tags.`harness.phase` = 'baseline'", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and "LP-FT" in runs[1].data.tags["mlflow.note.content"]
    from harness.arms import load_model
    first, second = (load_model(r.info.run_id)[0].state_dict() for r in runs)
    assert not torch.equal(first["backbone.conv1.weight"], second["backbone.conv1.weight"])  # fine-tuned after the probe


@pytest.mark.parametrize("init,mode,says", [
    ("{tmp}/missing.pt", "train", "no such weights file"),
    ("{tmp}/text.pt", "train", "cannot be read as weights"),
    ("{tmp}/simplecnn.pt", "train", "is for another architecture"),
    ("scratch", "probe", "needs pretrained weights"),
    ("models:/m-0123456789abcdef", "train", "does not resolve"),
])
def test_bad_weights_are_one_line_before_any_run(runner, client, tree, tmp_path, init, mode, says):
    (tmp_path / "text.pt").write_text("not weights")
    torch.save(classifiers.build(config.Config().classifier, 3, 3, 32).state_dict(), tmp_path / "simplecnn.pt")
    result = invoke(runner, ["run", *CHEAP, "--data-dir", tree, *RESNET, "--set",
                             f"classifier.init={init.format(tmp=tmp_path)}", "--set", f"classifier.mode={mode}"], ok=False)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and says in lines[0], result.stderr
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_pretrain_phase_on_the_other_classes_is_reused_by_a_second_seed(runner, client, tree, tmp_path):
    two = ["--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile",
           "--set", "generator.kind=noise", "--set", "classifier.epochs=1", *RESNET,
           "--set", "classifier.init=pretrain", "--set", "pretrain.epochs=1"]
    invoke(runner, ["run", *two, "--seeds", "2"])
    exp = client.get_experiment_by_name("harness").experiment_id
    pre = client.search_runs([exp], "tags.`harness.phase` = 'pretrain'", order_by=["attributes.start_time ASC"])
    assert len(pre) == 2 and ["harness.reused_from" in r.data.tags for r in pre] == [False, True]
    assert pre[0].data.params["pretrain.classes"] == "bird,cat"  # every class of the data the study does not use
    bases = client.search_runs([exp], "tags.`harness.phase` = 'baseline'")
    assert {b.data.params["upstream.pretrain"] for b in bases} == {pre[0].info.run_id}
    assert all("fine-tuned from `pretrain`" in b.data.tags["mlflow.note.content"] for b in bases)
    leak = invoke(runner, ["run", *two, "--set", "pretrain.classes=airplane,cat"], ok=False)
    assert leak.exit_code == 2 and "leaks" in leak.stderr
    none_left = invoke(runner, ["run", *two, "--set", "data.classes=all"], ok=False)
    assert none_left.exit_code == 2 and "none is left to pretrain on" in none_left.stderr
    # A grid whose axis asks for pretrain fills its classes per cell, as `run` does: the same key, reused.
    axis = ["--axis", "classifier.init=scratch,pretrain", "--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    invoke(runner, ["grid", *two, "--set", "classifier.init=scratch", *axis, "--seeds", "1"])
    pre = client.search_runs([exp], "tags.`harness.phase` = 'pretrain'", order_by=["attributes.start_time ASC"])
    assert len(pre) == 3 and pre[2].data.tags["harness.reused_from"] == pre[0].info.run_id
    cells = {p.data.tags["harness.cell"] for p in client.search_runs([exp], "tags.`harness.phase` = 'pipeline'")
             if "harness.cell" in p.data.tags}
    assert cells == {"classifier.init=scratch", "classifier.init=pretrain"}
    none_left = invoke(runner, ["grid", *two, "--set", "classifier.init=scratch", "--set", "data.classes=all", *axis,
                                "--dry-run"], ok=False)
    assert none_left.exit_code == 2 and "none is left to pretrain on" in none_left.stderr


def test_a_pretrain_phase_on_another_tree_is_keyed_on_its_images_not_its_path(runner, client, tree, tmp_path):
    other = tmp_path / "other"  # a flat tree of class folders, two classes the study's data does not have
    for name, src in (("dog", "cat"), ("frog", "bird")):
        shutil.copytree(tree / "train" / src, other / name)
    args = ["pretrain", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile", *RESNET,
            "--set", "classifier.init=pretrain", "--set", "pretrain.epochs=1", "--set", f"pretrain.data_dir={other}"]
    invoke(runner, args)
    exp = client.get_experiment_by_name("harness").experiment_id
    first = client.search_runs([exp], "tags.`harness.phase` = 'pretrain'")[0]
    assert first.data.params["pretrain.classes"] == "dog,frog"  # every class of that tree
    assert str(other) in first.data.tags["harness.data_source"]
    moved = shutil.copytree(other, tmp_path / "moved")
    invoke(runner, [*args[:-1], f"pretrain.data_dir={moved}"])  # the same images elsewhere: reused
    again = client.search_runs([exp], "tags.`harness.phase` = 'pretrain'", order_by=["attributes.start_time DESC"])[0]
    assert again.data.tags["harness.reused_from"] == first.info.run_id
    png = sorted((moved / "dog").iterdir())[0]
    png.write_bytes((moved / "frog" / sorted(p.name for p in (moved / "frog").iterdir())[0]).read_bytes())
    invoke(runner, [*args[:-1], f"pretrain.data_dir={moved}"])  # one image changed: trained anew
    last = client.search_runs([exp], "tags.`harness.phase` = 'pretrain'", order_by=["attributes.start_time DESC"])[0]
    assert "harness.reused_from" not in last.data.tags
    missing = invoke(runner, [*args[:-1], f"pretrain.data_dir={tmp_path / 'nowhere'}"], ok=False)
    assert missing.exit_code == 2 and "pretrain.data_dir" in missing.stderr and "not a folder" in missing.stderr
