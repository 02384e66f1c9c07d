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
    ("data.seed=-3", "data.seed must be >= 0"),
    ("generate.seed=-1", "generate.seed must be >= 0"),
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
