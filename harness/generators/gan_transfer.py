"""Where the GAN kind's training starts (gan.init): from scratch, from its own pretraining on classes
disjoint from the study's (the generator_pretrain phase), or from weights outside (a training state or a
generator checkpoint file, a runs:/ URI), with new class embeddings and the critic's first blocks frozen
(gan.freeze_d, Freeze-D). Part of the kind (gan.py imports it): its code is in the generator's key.
"""
from __future__ import annotations

import torch

from harness.errors import HarnessError
from harness.generators import trained


def pretrains(cfg) -> bool:
    return cfg.gan.init == "pretrain"


def pretraining(cfg, data):
    """The config the generator_pretrain phase trains under: this GAN from scratch, on `data` (the
    pretraining draw), seeded by pretrain.seed, for gan.pretrain_iterations where set."""
    import dataclasses
    g = cfg.gan
    own = dataclasses.replace(g, init="scratch", freeze_d=0, seed=cfg.pretrain.seed,
                              iterations=g.pretrain_iterations or g.iterations)
    from harness import config
    return config.with_sections(dataclasses.replace(cfg, data=data), {"gan": own})


def _outside(init: str) -> bool:
    return init not in ("scratch", "pretrain")


def init_needs_store(cfg) -> bool:
    return cfg.gan.init.startswith("runs:/")


def init_digest(ctx, cfg) -> str:
    """What stands for gan.init's weights from outside in the generator's key: their content."""
    if not _outside(cfg.gan.init):
        return ""
    from harness.tracking import codecs
    state, _ = _load_init(ctx, cfg.gan.init)
    named = [(f"{part}.{name}", t) for part in ("generator", "critic") for name, t in (state.get(part) or {}).items()]
    return f"gan-weights:{codecs.tensors_digest(named)[:16]}"


def _load_init(ctx, init: str) -> tuple[dict, str]:
    """({"generator": state dict, "critic": state dict or absent, "classes": [...] or absent}, where),
    from a training state or a generator checkpoint file, or a generator run's newest training state."""
    key = ("gan.init", init)
    if key in ctx.memo.generators:
        return ctx.memo.generators[key]
    if init.startswith("runs:/"):
        run_id = init[len("runs:/"):].split("/")[0]
        try:
            found = trained.newest_state(ctx.store, run_id)
        except Exception as e:
            raise HarnessError(f"gan.init {init}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
        if found is None:
            raise HarnessError(f"gan.init {init}: run {run_id} holds no GAN training state (checkpoints/training_state_*.pt)")
        state = found
    else:
        from pathlib import Path
        path = Path(init).expanduser()
        if not path.is_file():
            raise HarnessError(f"gan.init {init}: no such checkpoint file (give scratch, pretrain, a file or a runs:/ URI)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise HarnessError(f"gan.init {init} cannot be read (torch.load with weights_only): {first}") from None
    if not isinstance(state, dict) or not isinstance(state.get("generator", state.get("state_dict")), dict):
        raise HarnessError(f"gan.init {init} is neither a GAN training state nor a generator checkpoint of this harness")
    out = {"generator": state.get("generator", state.get("state_dict")), "critic": state.get("critic"),
           "classes": state.get("classes")}
    return ctx.memo.remember(ctx.memo.generators, key, (out, init))


def starting(ctx, cfg, inputs) -> tuple[dict, str] | None:
    """gan.init's weights for the generator phase ((state, where) or None from scratch)."""
    if cfg.gan.init == "scratch":
        return None
    if cfg.gan.init == "pretrain":
        run_id = inputs["generator_pretrain"].source_run_id
        state = trained.newest_state(ctx.store, run_id)
        return {"generator": state["generator"], "critic": state["critic"], "classes": list(cfg.pretrain.classes)}, \
            f"the generator_pretrain run `{run_id}`"
    return _load_init(ctx, cfg.gan.init)


def start_from(gan, state: dict, classes, where: str) -> str:
    """Weights from `state` (gan.init): the generator's and, where it has them, the critic's; class
    embeddings (and an AC head) only where they were trained on these very `classes`, else made anew.
    The critic's first gan.freeze_d blocks are frozen (Freeze-D). Optimizers start fresh. Returns
    what was done, in words."""
    same = state.get("classes") is not None and list(state["classes"]) == list(classes)
    fresh = ("embed.",) if not same else ()
    fresh_critic = ("embed.", "classify.") if not same else ()

    def load(module, weights, new, what):
        mine = module.state_dict()
        kept = {k: v for k, v in weights.items() if k in mine and not k.startswith(new)}
        wrong = [k for k, v in kept.items() if v.shape != mine[k].shape]
        missing = [k for k in mine if k not in kept and not k.startswith(new)]
        if wrong or missing:
            first = (wrong or missing)[0]
            raise HarnessError(f"gan.init {where}: its {what} does not fit this [gan] (width, latent_dim, "
                               f"conditional, spectral_norm, image size): {first!r} "
                               f"{'has another shape' if wrong else 'is missing'}")
        module.load_state_dict(kept, strict=False)
    load(gan.generator, state["generator"], fresh, "generator")
    if gan.ema is not None:
        gan.ema.load_state_dict(gan.generator.state_dict())
    said = f"started from {where}" + ("" if same else " (class embeddings made anew for this study's classes)")
    if state.get("critic") is not None:
        load(gan.critic, state["critic"], fresh_critic, "critic")
    else:
        said += "; its critic from scratch (the weights held a generator only)"
    if gan.cfg.freeze_d:
        convs = [m for m in gan.critic.body if isinstance(m, torch.nn.Conv2d)]
        if gan.cfg.freeze_d > len(convs):
            raise HarnessError(f"gan.freeze_d={gan.cfg.freeze_d}: the critic has {len(convs)} blocks")
        for m in convs[:gan.cfg.freeze_d]:
            m.requires_grad_(False)
        said += f"; the critic's first {gan.cfg.freeze_d} of {len(convs)} blocks frozen (Freeze-D)"
    gan.learning = [p for p in gan.critic.parameters() if p.requires_grad]
    return said
