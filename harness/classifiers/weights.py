"""Where a classifier's starting weights come from (classifier.init) and how they enter a network.

  scratch           the kind's own initialisation
  PATH              a weights file: a state dict, a torchvision or timm checkpoint, a harness
                    model/model.pt, a Lightning or DDP checkpoint (their `state_dict`/`model` and
                    `module.` wrappers are taken off); loaded with weights_only=True
  models:/NAME/VER  a registered model version, models:/m-ID a LoggedModel, runs:/RUN_ID a run: any
                    harness run that saved a classifier (baseline, synthetic arm, evaluator)

A head of another size (another number of classes) is dropped and made anew; any other key that
does not fit the network is named in one line. The key of a phase that starts from weights covers
their content (`digest`), never their path."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import HarnessError

URIS = ("models:/", "runs:/")


@dataclass(frozen=True)
class Init:
    """classifier.init, parsed once (`parse`): every question the harness asks of it is answered here."""
    text: str

    @property
    def source(self) -> str:
        """scratch | pretrain (this harness's pretrain phase) | uri (models:/, runs:/) | file."""
        if self.text in ("scratch", "pretrain"):
            return self.text
        return "uri" if self.text.startswith(URIS) else "file"

    @property
    def pretrained(self) -> bool:
        """Starts from trained weights: a frozen backbone (classifier.mode probe) needs it."""
        return self.source != "scratch"

    @property
    def outside(self) -> bool:
        """Weights read from outside (a file or a URI): a key covers their content (`digest`), not their
        name; the pretrain phase's are an upstream key instead."""
        return self.source in ("file", "uri")

    @property
    def needs_store(self) -> bool:
        """A URI resolves in the tracking store: a dry run, which opens none, cannot check it."""
        return self.source == "uri"

    @property
    def library_statistics(self) -> bool:
        """Whether a hub network (torchvision:/timm:) starts with its library's input statistics: for
        weights from outside, which may be the library's own (ImageNet) checkpoint; a harness checkpoint
        then brings its own statistics (`apply`). From scratch and from the pretrain phase (which trains the
        network from scratch) the network keeps the harness's statistics, the same in both."""
        return self.outside


def parse(init: str) -> Init:
    return Init(init)


def check(ctx, cfg) -> None:
    """Before any run opens: the weights are there, readable, a state dict, and fit the network."""
    settings = cfg.classifier
    init = parse(settings.init)
    if settings.mode != "train" and not init.pretrained:
        raise HarnessError(f"classifier.mode={settings.mode} freezes the backbone, which needs pretrained weights: "
                           "set classifier.init=pretrain (a pretrain phase on other classes: pretrain.classes) or a "
                           "weights file, a models:/ or runs:/ URI")
    if init.outside:
        from harness import classifiers
        apply(classifiers.build(settings, 2, cfg.data.channels, cfg.data.image_size, classifiers.section_of(cfg)),
              load(ctx, settings.init),
              settings.init)


def load(ctx, init: str) -> dict[str, torch.Tensor]:
    """The state dict classifier.init names (once per process: ctx.memo)."""
    key = ("classifier.init", init)
    if key in ctx.memo.generators:
        return ctx.memo.generators[key]
    if parse(init).needs_store:
        state = _from_run(ctx, _run_of(ctx, init), init)
    else:
        path = Path(init).expanduser()
        if not path.is_file():
            raise HarnessError(f"classifier.init {init}: no such weights file (give a file, a models:/ or runs:/ URI, "
                               "or scratch)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise HarnessError(f"classifier.init {init} cannot be read as weights (torch.load with weights_only): "
                               f"{first}") from None
    return ctx.memo.remember(ctx.memo.generators, key, unwrap(state, init))


def unwrap(state, where: str) -> dict[str, torch.Tensor]:
    for container in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"classifier.init {where} is not a state dict (a mapping of parameter names to tensors)")
    # Weights with NaN or infinity train to a NaN loss at once; the learning rate would be blamed for it.
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        floats = sum(v.is_floating_point() for v in state.values())
        raise HarnessError(f"classifier.init {where} holds non-finite values (NaN or infinity) in {len(bad)} of its "
                           f"{floats} float tensors (the first: {bad[0]!r}): these weights are broken; give another "
                           "file or scratch")
    return {k.removeprefix("module."): v for k, v in state.items()}


def starting(ctx, settings, inputs: dict | None = None) -> tuple[dict, str] | None:
    """(state dict, what stands for it) of classifier.init for the training loop; None from scratch.
    `inputs`: the phase's, which hold the pretrain phase's result under classifier.init=pretrain."""
    init = parse(settings.init)
    if init.source == "pretrain":
        done = (inputs or {})["pretrain"]
        return unwrap(_from_run(ctx, done.source_run_id, "pretrain"), "pretrain"), f"pretrain:{done.downstream_key}"
    return (load(ctx, settings.init), digest(ctx, settings.init)) if init.outside else None


def digest(ctx, init: str) -> str:
    """What stands for the weights in a key: a hash of their names and values."""
    if not parse(init).outside:
        return ""
    from harness.tracking import codecs
    return f"weights:{codecs.tensors_digest(load(ctx, init).items())[:16]}"


def _run_of(ctx, uri: str) -> str:
    """The run that holds a URI's weights: runs:/ID, a LoggedModel's source run, a model version's run."""
    client = ctx.store.client
    try:
        if uri.startswith("runs:/"):
            return uri[len("runs:/"):].split("/")[0]
        rest = uri[len("models:/"):]
        if rest.startswith("m-"):
            return client.get_logged_model(rest.split("/")[0]).source_run_id
        name, _, version = rest.partition("/")
        found = client.get_model_version(name, version) if version.isdigit() else \
            client.get_model_version_by_alias(name, version.lstrip("@")) if version else None
        if found is None:
            raise ValueError("give models:/NAME/VERSION or models:/NAME/@ALIAS")
        return found.run_id or client.get_logged_model(found.model_id).source_run_id
    except HarnessError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise HarnessError(f"classifier.init {uri} does not resolve in the tracking store: {first}") from None


def _from_run(ctx, run_id: str, uri: str) -> dict:
    from harness.tracking import codecs
    try:
        return codecs.load_torch(run_id, "model/model.pt")
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise HarnessError(f"classifier.init {uri}: run {run_id} holds no harness classifier (model/model.pt): "
                           f"{first}") from None


def apply(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Load `state` into `model`: its keys as they are, or as the raw network's under the wrapper's
    backbone (a torchvision or timm checkpoint), the original head's under the wrapper's head. A head
    of another shape is left as initialised (returned: the keys dropped); any other key that does not
    fit, or a parameter the weights lack, is an error naming the first."""
    mine = model.state_dict()
    head = getattr(model, "head_prefix", "head.")
    source = getattr(model, "head_source", None)  # the raw network's head layer ("fc", "classifier.3")

    def mapped(key: str) -> str:
        if key in mine:
            return key
        if source and (key == source or key.startswith(source + ".")):
            return head + key[len(source) + 1:]
        return f"backbone.{key}"
    out, dropped = {}, []
    for key, value in state.items():
        target = mapped(key)
        if key in ("normalize.mean", "normalize.std") and target in mine and mine[target].shape == value.shape:
            out[target] = value  # a harness checkpoint's input statistics travel with its weights
            continue
        if key in ("mean", "std") or target in ("mean", "std") or key.startswith("normalize.") or (
                key.endswith("num_batches_tracked") and target not in mine):
            continue  # a counter older torch versions did not save; statistics of another channel count
        if target not in mine:
            raise HarnessError(f"classifier.init {where} is for another architecture: its {key!r} fits nothing in "
                               f"classifier.kind={getattr(model, 'kind', '?')}")
        if mine[target].shape != value.shape:
            if target.startswith(head):
                dropped.append(key)  # another number of classes: the head is made anew
                continue
            raise HarnessError(f"classifier.init {where} is for another architecture: {key!r} has shape "
                               f"{tuple(value.shape)}, classifier.kind={getattr(model, 'kind', '?')} wants "
                               f"{tuple(mine[target].shape)}")
        out[target] = value
    missing = [k for k in mine if k not in out and not k.startswith((head, "normalize.")) and k not in ("mean", "std")
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise HarnessError(f"classifier.init {where} is for another architecture: it has no {missing[0]!r}")
    model.load_state_dict(out, strict=False)
    return dropped
