"""harness/table.py: each phase declared once. The table holds the phase modules (loaded when first
used, so `harness --help` stays light), every row's module implements the phase protocol, and a
phase's key covers every field it reads: nothing outside its declaration changes what it makes."""
import subprocess
import sys

import torch


def test_the_table_holds_the_phase_modules_and_help_loads_none():
    from harness import table
    for name, phase in table.PHASES.items():
        assert phase.module.__name__ == f"harness.phases.{name}"
        assert all(hasattr(phase.module, f) for f in ("compute", "load", "summary", "check", "before")), name
    # `harness --help` builds a command per row without importing a phase module's torch or MLflow.
    code = ("import sys; from click.testing import CliRunner; from harness.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# Keys per field: a phase's key covers the fields it reads, and nothing it reads is left out

# Config fields and another valid value for each under the tiny preset; a field not named here gets
# one derived from its declaration (`perturbations`). Fields that change the phase table's shape, and the
# speed-only switches (tested apart to train the same GAN up to float rounding, out of every key
# like `device`), are not perturbed.
PERTURB = {
    "data.source": "torchvision:CIFAR10", "data.classes": "airplane,automobile,cat", "data.n_per_class": 21,
    "data.val_per_class": 9, "data.seed": 1, "data.image_size": 64, "data.channels": 1, "data.test_fraction": 0.3,
    "classifier.epochs": 3, "classifier.steps": 5, "classifier.batch_size": 16, "classifier.lr": 2e-3,
    "classifier.weight_decay": 1e-4, "classifier.optimizer": "sgd", "classifier.schedule": "cosine",
    "classifier.augmentation": "crop-flip", "classifier.seed": 1, "classifier.budget": "steps",
    "classifier.synthetic_share": 0.25, "classifier.synthetic_weight": 0.5, "classifier.real_only_epochs": 1,
    "classifier.precision": "flip", "classifier.kind": "airbench", "classifier.width": 8, "classifier.init": "/nowhere",
    "classifier.mode": "probe", "classifier.backbone_lr": 0.5,
    "generator.mixup_alpha": 0.5, "generator.folder": "/nowhere",
    "gan.epochs": 3, "gan.iterations": 5, "gan.width": 16, "gan.latent_dim": 8, "gan.batch_size": 8, "gan.lr": 2e-4,
    "gan.beta1": 0.5, "gan.beta2": 0.99, "gan.critic_steps": 1, "gan.gp_weight": 5.0, "gan.gp_fraction": 0.5,
    "gan.loss": "hinge", "gan.spectral_norm": True, "gan.lr_d": 3e-4, "gan.conditional": "projection",
    "gan.ac_weight": 2.0, "gan.diffaugment": "color", "gan.compile": True, "gan.precision": "flip", "gan.ema": 0.9,
    "gan.sample_every": 2, "gan.checkpoint_every": 2, "gan.seed": 1,
    "diffusion.iterations": 5, "diffusion.epochs": 3, "diffusion.width": 16, "diffusion.layers_per_block": 2,
    "diffusion.attention": False, "diffusion.batch_size": 8, "diffusion.lr": 1e-4, "diffusion.warmup": 5,
    "diffusion.weight_decay": 0.01, "diffusion.beta_schedule": "squaredcos_cap_v2", "diffusion.prediction": "v_prediction",
    "diffusion.label_dropout": 0.2, "diffusion.guidance": 1.0, "diffusion.sample_steps": 3, "diffusion.flip": False,
    "diffusion.ema": 0.9, "diffusion.precision": "bf16", "diffusion.sample_every": 2, "diffusion.checkpoint_every": 2,
    "diffusion.seed": 1,
    "text2image.model": "someone/model", "text2image.revision": "v1", "text2image.prompt": "a {class}",
    "text2image.prompts": "bird=a small bird", "text2image.negative_prompt": "blurry", "text2image.steps": 5,
    "text2image.guidance": 3.0, "text2image.batch_size": 4, "text2image.dtype": "bf16", "text2image.mode": "img2img",
    "text2image.strength": 0.7, "text2image.resolution": 64,
    "generate.n_samples": 32, "generate.checkpoint_epoch": 1, "generate.seed": 1,
    "pseudolabel.threshold": 0.1, "pseudolabel.mode": "filter", "pseudolabel.top_k_per_class": 5,
    "pseudolabel.soft_labels": True, "pseudolabel.temperature": 0.5,
    "quality.n_samples": 24, "quality.evaluator_per_class": 15, "quality.evaluator_epochs": 2, "quality.k": 2,
    "quality.cas": False, "quality.precision": "flip",
    "seeds.count": 2, "seeds.share_generator": True, "seeds.generators": 2,
    "pretrain.classes": "cat", "pretrain.n_per_class": 5, "pretrain.epochs": 3, "pretrain.seed": 1, "pretrain.data_dir": "/nowhere",
    "gan.init": "/nowhere", "gan.freeze_d": 1, "gan.pretrain_iterations": 7,
}
# A value valid only beside another: checked with it (every perturbation at once holds both).
WITH = {"gan.freeze_d": {"gan.init": "/nowhere"}}
SHAPE = {"preset", "device", "generator.kind", "quality.enabled", "control.enabled", "gan.one_pass", "gan.channels_last",
         "gan.fused_adam", "classifier.synthetic_use"}


def _derived(key: str):
    """Another valid value for a field no row above names (a new kind's own section, say): its next
    choice, the other bool, a number one step inside its range, another text."""
    import dataclasses

    from harness import config
    section, _, name = key.partition(".")
    f = next(f for f in dataclasses.fields(config.sections()[section]) if f.name == name)
    d, meta = f.default, f.metadata
    if "choices" in meta:
        return next(c for c in meta["choices"] if c != d)
    if isinstance(d, bool):
        return not d
    if isinstance(d, (int, float)):
        up = d + (1 if isinstance(d, int) else 0.5 * (abs(d) or 1))
        return up if all(k not in meta or up <= meta[k] for k in ("lt", "le")) and ("lt" not in meta or up < meta["lt"]) \
            else d - (1 if isinstance(d, int) else 0.5 * abs(d))
    return f"{d}x" if isinstance(d, str) else d


def perturbations() -> dict:
    """PERTURB, and a derived perturbation for every other field (so that a new kind's settings need no row)."""
    from harness import config
    return {**{k: _derived(k) for k in config.valid_keys() if k not in PERTURB and k not in SHAPE}, **PERTURB}


def test_every_field_has_a_perturbation():
    from harness import config
    moves = perturbations()
    assert set(config.valid_keys()) == set(moves) | SHAPE
    base = config.load("tiny")
    for key, value in moves.items():  # each one a valid value (a derived one that is not: give it a row above)
        if value != "flip":
            config.apply(base, {key: value, **WITH.get(key, {})})


def _declared(phase, cfg) -> set[str]:
    from harness import config
    sections, _, _ = phase.reads(cfg)
    return {k for k in config.valid_keys() if k.split(".")[0] in sections or k in sections} - set(phase.ignored(cfg))


def _output(client, name, result):
    """What a phase made, to compare bit for bit: weights, images, labels, curves, deltas."""
    if name in ("baseline", "control", "synthetic"):
        return {k: v.clone() for k, v in result.model.state_dict().items()}
    if name == "evaluator":
        return {k: v.clone() for k, v in result.evaluator.model.state_dict().items()}
    if name in ("generate", "pseudolabel"):
        return {"images": result.images, "labels": result.labels}
    if name == "generator":
        run = client.get_run(result.source_run_id)
        return {k: [m.value for m in client.get_metric_history(result.source_run_id, k)] for k in run.data.metrics
                if k.startswith(("gan/", "quality/")) and k != "gan/seconds"}
    return dict(result.deltas)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is None and b is None or (a is not None and b is not None and torch.equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_no_phase_reads_a_field_its_key_leaves_out(client, tree):
    """Each phase again, without the cache, on the same inputs, with every field outside its
    declaration perturbed: what it makes must not change by a bit."""
    import dataclasses

    from harness import config, pipeline, precision, table
    from harness.context import Context
    from harness.runner import Runner
    from harness.tracking import store
    base = precision.resolve_config(config.load("tiny", ["data.classes=airplane,automobile,bird", "quality.enabled=true",
                                                         "quality.n_samples=16", "quality.evaluator_epochs=1"]),
                                    torch.device("cpu"))
    ctx = Context(store.configure("harness"), torch.device("cpu"), str(tree))
    done = pipeline.run(ctx, base).results
    fresh = dataclasses.replace(ctx, use_cache=False)
    flat = config.flat_values(base)
    flip = {"fp32": "bf16", "bf16": "fp32"}
    for name, phase in table.PHASES.items():
        if name not in done:  # a phase that does not run under this config (pretrain: classifier.init=pretrain)
            continue
        declared = _declared(phase, base)
        updates = {k: (flip[flat[k]] if v == "flip" else v) for k, v in perturbations().items() if k not in declared}
        other = config.apply(base, updates)
        inputs = {u: done[u] for u in phase.reads(base)[1]}
        again = Runner(fresh).run(name, other, inputs)
        assert not again.reused
        assert _same(_output(client, name, done[name]), _output(client, name, again)), \
            f"{name} changed when fields outside its key changed: it reads one of {sorted(updates)}"


