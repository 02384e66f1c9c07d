"""harness.tracking: the code fingerprint in a phase's cache key follows what the phase runs (its
imports), ignores comments and docstrings, and leaves the keys of phases an edit does not reach."""
import shutil

import pytest

from harness import config, table
from harness.figures import readable
from harness.tracking import provenance


@pytest.fixture
def package(tmp_path):
    return shutil.copytree(provenance.PACKAGE_DIR, tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))


def _prints(package, cfg):
    return {name: provenance.fingerprint(table.PHASES[name].code(cfg), root=package)
            for name in ("baseline", "generator", "generate", "pseudolabel", "synthetic", "compare")}


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_closure_follows_imports_not_the_whole_package():
    generator_cfg = config.load("tiny")
    gen = provenance.closure(table.PHASES["generator"].code(generator_cfg))
    assert {"harness.generators.gan", "harness.generators.dcgan", "harness.precision", "harness.diffaugment",
            "harness.data.images"} <= set(gen)
    # Registries contribute their own code only: the kind the config chose is a root of its own; the
    # classifier's network and plumbing (runs, heartbeats, range checks, figures) are in no GAN key.
    assert not {"harness.generators.noise", "harness.analysis.render", "harness.classifiers.simplecnn", "harness.train",
                "harness.config", "harness.tracking.store", "harness.tracking.liveness", "harness.figures"} & set(gen)
    base = provenance.closure(table.PHASES["baseline"].code(generator_cfg))
    assert "harness.arms" in base and not any(m.startswith("harness.generators") for m in base)
    noise = config.apply(generator_cfg, {"generator.kind": "noise"})
    assert "harness.generators.noise" in provenance.closure(table.PHASES["generate"].code(noise))


def test_comments_and_docstrings_do_not_change_a_key(package):
    cfg = config.load("tiny")
    before = _prints(package, cfg)
    _edit(package / "classifiers" / "simplecnn.py", "class SimpleCNN(nn.Module):", "# a new comment\nclass SimpleCNN(nn.Module):  # why")
    _edit(package / "train.py", '"""Train a fresh network', '"""Train a brand-new network')
    assert _prints(package, cfg) == before


def test_an_edit_changes_the_keys_of_the_phases_that_run_it_only(package):
    cfg = config.load("tiny")
    before = _prints(package, cfg)
    # The comparator's statistics: only compare runs them. A GAN survives it, and --resume finds its run.
    _edit(package / "analysis" / "stats.py", "ALPHA = 0.05", "ALPHA = 0.049")
    after = _prints(package, cfg)
    assert after["compare"] != before["compare"]
    assert {k: after[k] for k in after if k != "compare"} == {k: before[k] for k in before if k != "compare"}
    # Another generator kind: the GAN's phases keep their keys; that kind's generate phase does not.
    noise = config.apply(cfg, {"generator.kind": "noise"})
    noise_before = provenance.fingerprint(table.PHASES["generate"].code(noise), root=package)
    _edit(package / "generators" / "noise.py", ".clamp(0, 255)", ".clamp(1, 255)")
    assert _prints(package, cfg) == after
    assert provenance.fingerprint(table.PHASES["generate"].code(noise), root=package) != noise_before
    # The classifier's network: every phase that trains or runs a classifier (generate's sample quality
    # does), but no generator and not the comparator.
    _edit(package / "classifiers" / "simplecnn.py", "hidden: int = 256", "hidden: int = 257")
    changed = {k for k, v in _prints(package, cfg).items() if v != after[k]}
    assert changed == {"baseline", "generate", "pseudolabel", "synthetic"}


def test_plumbing_is_in_no_key_and_the_training_loop_in_both_arms_only(package):
    """Opening runs, heartbeats, the report's rendering and another section's range checks compute
    nothing a phase outputs: an edit there reuses every phase. The classifier's training loop retrains
    both arms (and what labels or measures with a classifier) and no generator."""
    cfg = config.load("tiny")
    kinds = {kind: config.apply(cfg, {"generator.kind": kind}) for kind in ("gan", "diffusion")}

    def prints():
        return {(kind, name): provenance.fingerprint(table.PHASES[name].code(c), root=package)
                for kind, c in kinds.items() for name in table.PHASES}
    before = prints()
    _edit(package / "tracking" / "liveness.py", "def interval()", "def interval_():\n    return 1\n\n\ndef interval()")
    _edit(package / "tracking" / "store.py", "NOTE = ", "UNUSED = 1\nNOTE = ")
    _edit(package / "analysis" / "render.py", 'or "synthetic"', 'or "synthetic arm"')
    _edit(package / "config" / "rules.py", "exceeds classifier.epochs", "is more than classifier.epochs")
    assert prints() == before
    _edit(package / "train.py", "def pick_device(", "UNUSED = 1\n\n\ndef pick_device(")
    changed = {key for key, v in prints().items() if v != before[key]}
    assert {(k, n) for k, n in changed} >= {("gan", "baseline"), ("gan", "synthetic"), ("diffusion", "baseline")}
    assert not {n for _, n in changed} & {"generator", "compare"}


def test_the_module_cache_on_disk_gives_the_same_keys_without_parsing(package, tmp_path, monkeypatch):
    cfg = config.load("tiny")
    roots = table.PHASES["synthetic"].code(cfg)
    plain = provenance.fingerprint(roots, root=package)
    assert provenance.fingerprint(roots, root=package, cache=provenance.ModuleCache(tmp_path / "code")) == plain
    assert list((tmp_path / "code").iterdir())  # the index was written

    def no_parse(*a, **k):
        raise AssertionError("parsed a module the index holds")
    with monkeypatch.context() as m:  # a later command: every module from the index
        m.setattr(provenance.ast, "parse", no_parse)
        assert provenance.fingerprint(roots, root=package, cache=provenance.ModuleCache(tmp_path / "code")) == plain
    # An edit is new bytes: parsed again and the key follows it; a torn index is parsed over.
    _edit(package / "train.py", "math.ceil(cfg.epochs / nominal)", "math.ceil(cfg.epochs / nominal) + 1")
    edited = provenance.fingerprint(roots, root=package, cache=provenance.ModuleCache(tmp_path / "code"))
    assert edited != plain and edited == provenance.fingerprint(roots, root=package)
    next((tmp_path / "code").iterdir()).write_text('{"torn')
    assert provenance.fingerprint(roots, root=package, cache=provenance.ModuleCache(tmp_path / "code")) == edited


def test_dataset_inputs_retry_a_unique_key_race_only(monkeypatch):
    from harness.tracking import store
    calls = []

    def racing(**kwargs):  # what a tracking server over PostgreSQL answers the second of two workers
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
                               "(Background on this error at: https://sqlalche.me/e/21/gkpj)")
    monkeypatch.setattr(store.mlflow, "log_inputs", racing)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    store.log_inputs(["d"], ["train"])
    assert len(calls) == 2 and calls[1]["contexts"] == ["train"]

    def down(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("connection refused")
    monkeypatch.setattr(store.mlflow, "log_inputs", down)
    calls.clear()
    with pytest.raises(RuntimeError, match="refused"):
        store.log_inputs(["d"], ["train"])
    assert len(calls) == 1  # any other failure is not retried


def test_class_names_in_any_script_draw_without_a_warning(runner, client, tmp_path):
    """CJK class names through the whole pipeline: figures either find an installed font that has the
    characters or write them as U+XXXX; never matplotlib's empty boxes and 'Glyph ... missing'."""
    import warnings

    from conftest import invoke, write_tree
    names = {"airplane": "飞机", "automobile": "汽车", "bird": "鸟"}
    tree = write_tree(tmp_path / "src")
    data = tmp_path / "cjk"
    for split in ("train", "test"):
        for old, new in names.items():
            (data / split).mkdir(parents=True, exist_ok=True)
            (tree / split / old).rename(data / split / new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        invoke(runner, ["run", "--preset", "tiny", "--data-dir", data, "--set", "data.classes=all"])
    glyphs = [str(w.message) for w in caught if "missing from" in str(w.message) or "Glyph" in str(w.message)]
    assert glyphs == []
    exp = client.get_experiment_by_name("harness").experiment_id
    (base,) = client.search_runs([exp], "tags.`harness.phase` = 'baseline'")
    assert "test/鸟/f1" in base.data.metrics


def test_readable_uses_a_font_with_the_characters_or_code_points():
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager
    fig, ax = plt.subplots()
    title = ax.set_title("猫 cat")
    readable(fig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    plt.close(fig)
    assert not [w for w in caught if "missing from" in str(w.message)]
    font = font_manager.findfont(title.get_fontproperties())
    assert title.get_text() == "U+732B cat" or 0x732B in matplotlib.ft2font.FT2Font(font).get_charmap()


def test_the_mlflow_internals_a_lost_store_drops_runs_with():
    # When the store stops answering, store._end drops the run locally (so that the user reads the
    # error that stopped the phase, not a chain of failed writes) through MLflow's private run stack
    # and system-metrics monitor: an MLflow release that renames them fails here, by name.
    import inspect

    import mlflow.tracking.fluent as fluent
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    assert callable(getattr(fluent._active_run_stack, "get", None))
    assert isinstance(fluent.run_id_to_system_metrics_monitor, dict)
    source = inspect.getsource(SystemMetricsMonitor)
    assert "self._shutdown_event" in source and "self._process" in source


def test_one_retry_helper_and_one_wait_loop():
    """liveness.retrying: again on a race's message only, up to its tries; wait_until: the value, None
    at the timeout, and a beat that raises ends the wait."""
    from harness.errors import HarnessError
    from harness.tracking import liveness
    calls = []

    def racing():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("UNIQUE constraint failed: datasets.digest")
        return "made"
    assert liveness.retrying(racing, ("UNIQUE constraint",), tries=3, pause=lambda _: 0) == "made" and len(calls) == 3
    calls.clear()
    with pytest.raises(RuntimeError):
        liveness.retrying(racing, ("UNIQUE constraint",), tries=2, pause=lambda _: 0)
    with pytest.raises(ValueError):  # not a race: at once
        liveness.retrying(lambda: int("x"), ("UNIQUE constraint",), tries=5, pause=lambda _: 1 / 0)
    ticks = iter(range(10))
    assert liveness.wait_until(lambda: next(ticks) == 2 and "ready", timeout=5, every=0) == "ready"
    assert liveness.wait_until(lambda: None, timeout=0.05, every=0.01) is None

    def gone():
        raise HarnessError("the store stopped answering")
    with pytest.raises(HarnessError):
        liveness.wait_until(lambda: None, timeout=None, every=0, beat=gone)


def test_every_json_written_is_strict():
    """RFC 8259 has no Infinity or NaN: a browser's JSON.parse, jq and MLflow's artifact viewer reject a
    whole file for one. A grid's worth "less than nothing" is minus infinity in memory, null plus words on disk."""
    import glob
    import json
    from pathlib import Path

    from harness.tracking import codecs

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    text = codecs.dumps({"worth": {"real_images": float("-inf"), "high": float("inf"), "low": 12.5},
                         "p": [0.1, float("nan")], "label": "gan"})
    back = json.loads(text, parse_constant=refuse)
    assert back["worth"] == {"real_images": None, "real_images_words": "minus infinity", "high": None,
                             "high_words": "infinity", "low": 12.5}
    assert back["p"] == [0.1, None] and back["label"] == "gan"
    # ...and every export committed under studies/results.
    root = Path(__file__).resolve().parents[1] / "studies" / "results"
    for path in glob.glob(str(root / "**" / "*.json"), recursive=True):
        json.loads(Path(path).read_text(), parse_constant=refuse)
