"""Generator kinds behind one protocol, chosen by `generator.kind`. A new built-in kind = one module
here + one line in harness/registry.py (BUILTIN_GENERATORS); a third-party package adds one through the entry-point group
`harness.generators` (name = module), and it is then used, listed and fingerprinted like these.

A kind is a module with:
  TRAINS: bool              whether it is fitted in a `generator` phase run (and has checkpoints)
  SECTIONS: tuple[str]      config sections that configure it, besides `generator.kind`, and the
                            [generator] fields it reads (mixup: generator.mixup_alpha); its own section
                            is its module's optional CONFIG (below), named after it
  DATA: tuple[str] | (cfg) -> tuple[str]
                            splits it draws from when it does not train (train, pool): its key covers them
  knows_classes(cfg) -> bool  whether its images come with their class (else the baseline labels them)
  sampler(ctx, cfg, source) -> stream.Sampler
                            source: the generator run id when TRAINS, else the data splits
optionally:
  CONFIG                    a frozen dataclass of config.setting fields: its own section [NAME] (gan.py's
                            [gan]), keyed, seeded, range-checked and listed like the shared sections
  CLASSES: str, NEEDS: str  when it knows its classes and what it needs, in words (`harness kinds`)
  check(cfg)                config-only checks, before anything loads
  preflight(ctx, cfg, source)  checks against the data (and the generator run `source`, when known),
                            before any run opens
  identity(ctx, cfg) -> str what it reads from outside the config and the data (a folder's pixels, a
                            model's resolved revision): the generate phase's key covers it
  datasets(ctx, cfg) -> list[Record]  MLflow dataset inputs of the generate run besides the splits
  in_words(cfg) -> str      the generator as a pipeline's description names it
  real_images_added(cfg) -> int  a kind whose images are real ones (oracle, replay): how many new ones it
                            adds, its rung on a grid's oracle ladder
  cost_note(cfg, device) -> str | None  a warning, before anything runs, that it takes hours here
  SAMPLING: tuple[str]      section.field settings read at generate time only (keyed with the generate
                            phase, not the generator: another value samples the same trained model)
and, when TRAINS (harness/generators/trained.py is the loop both gan and diffusion use):
  fit(ctx, cfg, splits, resume_from, evaluator)  train inside the active run, checkpointing
  resumable(store, run_id) -> bool               an interrupted run that fit can continue
  checkpoints(run_id) -> list[int]               the epochs a sampler can draw from
optionally, a kind that can start from trained weights (gan: gan.init):
  starting(ctx, cfg, inputs) -> (state, where) | None   the weights fit(..., start=) begins from
  init_digest(ctx, cfg) -> str                  weights from outside, as their content: in the generator's key
  pretrains(cfg) -> bool, pretraining(cfg, data) -> cfg, PRETRAIN_UNREAD
                            a generator_pretrain phase on classes disjoint from the study's ([pretrain]):
                            whether it runs, the config it trains under, the fields it does not read

The controls every study needs go through the same generate -> pseudolabel -> synthetic path:
`oracle` (unused real training images: the ceiling), `replay` (the training images themselves: the
recipe's own effect, no new information), `mixup` (pairs of real images blended) and `noise`
(per-class Gaussians: the floor). Trained on the small set: `gan` and `diffusion`. Images from outside: `folder` (any tool's output) and
`text2image` (a pretrained diffusers pipeline).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.registry import BUILTIN_GENERATORS, GENERATORS, Registry

GROUP, BUILTIN = GENERATORS, BUILTIN_GENERATORS
REQUIRED = ("TRAINS", "SECTIONS", "DATA", "knows_classes", "sampler")


@dataclass(frozen=True)
class Record:
    """One MLflow dataset input: pixels, labels (or None), the content digest, a URI and its context."""
    name: str
    images: object
    labels: object
    digest: str
    source: str
    context: str


KINDS = Registry("generator", GROUP, BUILTIN, REQUIRED, "harness/generators/__init__.py")
plugins, names, get = KINDS.plugins, KINDS.names, KINDS.get


def data(cfg) -> tuple[str, ...]:
    """The splits a kind that does not train reads under this config."""
    kind = get(cfg.generator.kind)
    return kind.DATA(cfg) if callable(kind.DATA) else tuple(kind.DATA)


def check(cfg) -> None:
    """Settings that only make sense for some kinds; checked before any run opens."""
    kind = get(cfg.generator.kind)
    if hasattr(kind, "check"):
        kind.check(cfg)
    if cfg.pseudolabel.mode != "label" and not kind.knows_classes(cfg):
        raise HarnessError(f"pseudolabel.mode={cfg.pseudolabel.mode} needs a generator that knows its images' "
                           f"classes ({classes_in_words()}); generator.kind={cfg.generator.kind} does not")
    if cfg.generate.checkpoint_epoch and not kind.TRAINS:
        raise HarnessError(f"generate.checkpoint_epoch={cfg.generate.checkpoint_epoch} needs a generator with "
                           f"checkpoints; generator.kind={cfg.generator.kind} does not train")


def classes_in_words() -> str:
    """The kinds that know their images' classes, from each kind's CLASSES (installed plugins included)."""
    out = []
    for name in names():
        said = getattr(get(name), "CLASSES", "")
        if said and not said.startswith("no"):
            out.append(name if said.startswith("always") else f"{name} {said}")
    return "generator.kind=" + ", ".join(out)


def preflight(ctx, cfg, source: str | None = None) -> None:
    """The kind's checks against the data (e.g. enough unused images) and the generator run it will
    sample (`source`, when known), before any run opens."""
    kind = get(cfg.generator.kind)
    if hasattr(kind, "preflight"):
        kind.preflight(ctx, cfg, source)
    if cfg.quality.enabled and cfg.quality.evaluator_per_class:
        from harness import quality  # the evaluator's own draw of the training images: checked like the data's
        try:
            ctx.splits(quality.evaluator_data(cfg))
        except HarnessError as e:
            raise HarnessError(f"quality.evaluator_per_class={cfg.quality.evaluator_per_class} does not fit the data: "
                               f"{str(e).replace('data.n_per_class', 'quality.evaluator_per_class')}") from None


def pretrains(cfg) -> bool:
    """Whether the kind starts from its own generator_pretrain phase under this config."""
    kind = get(cfg.generator.kind)
    return kind.TRAINS and hasattr(kind, "pretrains") and kind.pretrains(cfg)


def starting(ctx, cfg, inputs):
    """The weights the kind's generator phase starts from ((state, where)), or None: from scratch."""
    kind = get(cfg.generator.kind)
    return kind.starting(ctx, cfg, inputs) if hasattr(kind, "starting") else None


def init_digest(ctx, cfg) -> str:
    kind = get(cfg.generator.kind)
    return kind.init_digest(ctx, cfg) if hasattr(kind, "init_digest") else ""


def check_init(ctx, cfg, dry_run: bool = False) -> None:
    """Before any run opens: the weights the kind starts from are there and readable (a URI needs the
    store, which a dry run does not open)."""
    kind = get(cfg.generator.kind)
    if hasattr(kind, "init_digest") and not (dry_run and getattr(kind, "init_needs_store", lambda c: False)(cfg)):
        kind.init_digest(ctx, cfg)


def sampling(cfg) -> tuple[str, ...]:
    """The kind's settings read at generate time only."""
    return tuple(getattr(get(cfg.generator.kind), "SAMPLING", ()))


def cost_note(cfg, device) -> str | None:
    """A warning, before anything runs, that this kind under this config takes hours on this device."""
    kind = get(cfg.generator.kind)
    return kind.cost_note(cfg, device) if hasattr(kind, "cost_note") else None


def in_words(cfg) -> str:
    """The generator as a pipeline's description names it: the kind's own words where it has them."""
    kind = get(cfg.generator.kind)
    return kind.in_words(cfg) if hasattr(kind, "in_words") else f"generator `{cfg.generator.kind}`"


def identity(ctx, cfg) -> str:
    """What the kind reads from outside the config and the data, as a digest ("" for none)."""
    kind = get(cfg.generator.kind)
    return kind.identity(ctx, cfg) if hasattr(kind, "identity") else ""


def datasets(ctx, cfg) -> list[Record]:
    kind = get(cfg.generator.kind)
    return list(kind.datasets(ctx, cfg)) if hasattr(kind, "datasets") else []


def describe() -> list[dict[str, str]]:
    """Every kind, built-in and installed, as `harness kinds` lists it."""
    rows = []
    for name in names():
        origin = KINDS.origin(name)
        try:
            kind = get(name)
        except HarnessError as e:
            rows.append({"kind": name, "trains": "?", "classes": "?", "needs": str(e), "from": origin})
            continue
        rows.append({"kind": name, "trains": "yes" if kind.TRAINS else "no",
                     "classes": getattr(kind, "CLASSES", "?"), "needs": getattr(kind, "NEEDS", ""), "from": origin})
    return rows
