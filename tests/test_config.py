import pytest

from harness import config
from harness.errors import HarnessError


def test_defaults_are_the_reference_study():
    cfg = config.Config()
    assert cfg.data.classes == ("airplane", "automobile", "bird")
    assert cfg.data.n_per_class == 1000
    assert cfg.generate.n_samples == 1500
    assert cfg.pseudolabel.threshold == 0.95
    assert (cfg.gan.lr, cfg.gan.beta1, cfg.gan.beta2, cfg.gan.critic_steps, cfg.gan.gp_weight) == (1e-4, 0.0, 0.9, 5, 10.0)
    assert config.load("reference").data == cfg.data


def test_preset_and_overrides_are_typed():
    cfg = config.load("tiny", ["classifier.epochs=3", "classifier.lr=0.01", "classifier.augmentation=crop-flip",
                               "data.classes=cat,dog", "device=cpu"])
    assert cfg.preset == "tiny"
    assert cfg.classifier.epochs == 3 and isinstance(cfg.classifier.epochs, int)
    assert cfg.classifier.lr == 0.01
    assert cfg.classifier.augmentation == "crop-flip"
    assert cfg.data.classes == ("cat", "dog")
    assert cfg.device == "cpu"
    assert cfg.data.n_per_class == 20  # from the preset, untouched


def test_several_items_in_one_set():
    cfg = config.load("tiny", ["classifier.epochs=3  data.seed=4", ""])
    assert (cfg.classifier.epochs, cfg.data.seed) == (3, 4)


def test_preset_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[classifier]\nepochs = 7\n")
    cfg = config.load(str(path))
    assert cfg.classifier.epochs == 7 and cfg.preset == "mine"


@pytest.mark.parametrize("item, message", [
    ("classifier.epoch=3", "unknown config key 'classifier.epoch'; valid keys: preset, device, data.source, data.classes"),
    ("nosuch.key=1", "unknown config key 'nosuch.key'"),
    ("classifier.epochs=three", "classifier.epochs must be an integer, got 'three'"),
    ("classifier.augmentation=maybe", "classifier.augmentation must be one of none, crop-flip"),
    ("classifier.epochs=0", "classifier.epochs must be > 0"),
    ("pseudolabel.threshold=1.5", "pseudolabel.threshold must be in [0, 1]"),
    ("classifier.epochs", "--set takes section.key=value"),
    ("classifier.lr=inf", "classifier.lr must be a finite number, got inf"),
    ("classifier.weight_decay=nan", "classifier.weight_decay must be a finite number, got nan"),
    ("gan.beta1=5", "gan.beta1 must be in [0, 1)"),
    ("gan.gp_weight=-1", "gan.gp_weight must be >= 0"),
    ("data.seed=-3", "data.seed must be in [0, 4294967295]"),
    ("generate.seed=-1", "generate.seed must be in [0, 4294967295]"),
])
def test_bad_overrides_are_rejected(item, message):
    with pytest.raises(HarnessError, match=None) as info:
        config.load("tiny", [item])
    assert message in str(info.value)


def test_bad_preset_values(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[classifier]\nepochs = 2.5\n")
    with pytest.raises(HarnessError, match="classifier.epochs must be an integer"):
        config.load(str(path))
    with pytest.raises(HarnessError, match="unknown preset 'nope'; available: .*tiny"):
        config.load("nope")


def test_hash_is_stable_and_tracks_what_matters():
    a = config.load("tiny")
    assert config.config_hash(a) == config.config_hash(config.load("tiny"))
    assert config.config_hash(a) != config.config_hash(config.apply(a, {"classifier.seed": 1}))
    # Where it runs and what the preset was called do not change the result's identity.
    assert config.config_hash(a) == config.config_hash(config.apply(a, {"device": "cpu", "preset": "x"}))
    # A section hash ignores the other sections.
    b = config.apply(a, {"pseudolabel.threshold": 0.9})
    assert config.config_hash(a, ["data", "classifier"]) == config.config_hash(b, ["data", "classifier"])


def test_flat_params():
    params = config.flat(config.Config())
    assert params["data.classes"] == "airplane,automobile,bird"
    assert params["gan.critic_steps"] == "5"


def test_the_facts_of_a_field_are_read_from_its_declaration():
    """Seeds, precisions, unhashed fields, optional and sweepable sections: each declared once, on the
    field or section, and every list derived from there."""
    assert set(config.fields_where("seed")) == {"data.seed", "classifier.seed", "gan.seed", "diffusion.seed",
                                                "generate.seed"}
    assert set(config.fields_where("precision")) == {"classifier.precision", "gan.precision", "diffusion.precision",
                                                     "quality.precision"}
    assert set(config.fields_where("unhashed")) == {"generator.folder", "gan.one_pass", "gan.channels_last", "gan.fused_adam",
                                      "classifier.init", "pretrain.data_dir", "gan.init"}  # paths: keys cover their content
    # A kind's own section is optional unless it says not ([gan], in every hash since the first version);
    # a new kind adds its own (hence `<=`: a kind is its module and one registry line, and no test row).
    optional = set(config.optional_sections())
    assert {"diffusion", "text2image", "pretrain", "control"} <= optional and not {"gan", "data", "classifier"} & optional
    assert optional - {"pretrain", "control"} <= set(config.kind_sections())
    # A trained kind's section is read by the phases a sweep runs once: never sweepable by default.
    assert not {"data", "gan", "diffusion", "generator", "quality", "study"} & set(config.sweepable_sections())
    # Every declared range is checked, with its bound in the message.
    from harness.generators import gan
    for f in __import__("dataclasses").fields(gan.CONFIG):
        if "gt" in f.metadata:
            with pytest.raises(HarnessError, match=f"gan.{f.name} must be"):
                config.apply(config.Config(), {f"gan.{f.name}": f.metadata["gt"]})


def test_every_seed_of_a_diffusion_study_starts_from_its_own_weights():
    """seeded() sets every field declared a seed: two diffusion generators of one grid cell differ by
    their initial weights and noise, not only by their data draw, and their keys differ."""
    pytest.importorskip("diffusers")
    import torch

    from harness import pipeline, table
    from harness.generators import diffusion
    cfg = config.load("tiny", ["generator.kind=diffusion"])
    one, two = pipeline.seeded(cfg, 0), pipeline.seeded(cfg, 1)
    assert (one.diffusion.seed, two.diffusion.seed) == (0, 1)
    sections = table.PHASES["generator"].reads(one)[0]
    assert config.config_hash(one, sections) != config.config_hash(two, sections)
    first = [diffusion.trainer(c, torch.device("cpu"), 3, 3, 32).unet.state_dict() for c in (one, two)]
    assert any(not torch.equal(first[0][k], first[1][k]) for k in first[0] if first[0][k].is_floating_point())


def test_the_presets_hash_as_they_did_before_kinds_declared_their_sections():
    """Moving [gan], [diffusion] and [text2image] into their kinds' modules (0.2.0) moved no hash: the
    whole config's and every phase's, under the cpu and strong-baseline presets, as measured before."""
    from harness import table
    before = {"cpu": ["cf00fe740e4f", "645e153a0a2b", "6c3ffbdd0837", "c9f58bef4d97", "126f3d199141", "e07c9c4c1c04",
                      "b5c8b34cb62f", "cd0709e94a42", "cd0709e94a42", "3791aea8ebab"],
              "strong-baseline": ["3859716b14c9", "d6414d44cdb0", "6c3ffbdd0837", "b081bb75c682", "262c6f1ba3c6",
                                  "e07c9c4c1c04", "2fa10fc772f9", "bbf1ae5115e6", "bbf1ae5115e6", "3791aea8ebab"]}
    # The phases of then, in the table's order (a phase added since has no hash to keep); a field added
    # since (classifier.synthetic_use) is hashed only away from its default, so it moves none of these.
    then = ("pretrain", "evaluator", "baseline", "generator", "generate", "pseudolabel", "control", "synthetic", "compare")
    for preset, hashes in before.items():
        cfg = config.load(preset)
        assert [config.config_hash(cfg)] + [config.config_hash(cfg, table.PHASES[p].reads(cfg)[0], table.PHASES[p].ignored(cfg))
                                            for p in then] == hashes, preset
        moved = config.apply(cfg, {"classifier.synthetic_use": "pretrain"})
        assert config.config_hash(moved) != hashes[0], preset
