"""Generator phase: fit the generator kind that trains (generator.kind=gan: see
harness/generators/gan.py for its artifacts). Kinds that do not train have no such phase: their
generate phase draws from the data directly.

`--resume` (ctx.resume) continues the newest interrupted (KILLED/FAILED) run of the same key from
its last checkpoint, in a new run tagged `harness.resumed_from`.
"""
from __future__ import annotations


from harness import generators
from harness.context import PhaseResult
from harness.tracking.store import STOPPED


def check(ctx, cfg, inputs) -> None:
    generators.preflight(ctx, cfg)  # a batch larger than the training set, an evaluator that does not fit
    generators.init_digest(ctx, cfg)  # weights from outside (gan.init): there, readable


def keyed_on(ctx, cfg, inputs) -> tuple[str, ...]:
    """Weights from outside the kind starts from (gan.init): their content."""
    return (generators.init_digest(ctx, cfg),)


def before(ctx, cfg, found) -> dict:
    """Tags and options for the run about to open: which interrupted run to continue, if any. With
    --resume, the newest KILLED or FAILED one; without, a run whose process died (a worker killed
    outright) or was stopped by SIGTERM (a scheduler's time limit, a preemption, `scancel`) is taken
    over all the same: nobody chose to stop it. Ctrl-C is a choice: it waits for --resume."""
    if not ctx.use_cache and not ctx.resume or (ctx.use_cache and found.finished):
        return {}
    kind = generators.get(cfg.generator.kind)
    candidates = found.interrupted()
    if not ctx.resume:
        candidates = [r for r in candidates if "harness.died" in r.data.tags or r.data.tags.get(STOPPED) == "SIGTERM"]
    old = next((r.info.run_id for r in candidates if kind.resumable(ctx.store, r.info.run_id)), None)
    if old is None:
        if ctx.resume:
            ctx.store.say("generator: no interrupted run with a checkpoint for this config; training from scratch")
        return {}
    return {"tags": {"harness.resumed_from": old}, "options": {"resume_from": old}}


def compute(ctx, cfg, inputs, resume_from: str | None = None) -> PhaseResult:
    ev = inputs.get("evaluator")
    start = generators.starting(ctx, cfg, inputs)
    generators.get(cfg.generator.kind).fit(ctx, cfg, ctx.splits(cfg.data), resume_from,
                                           ev.evaluator if ev is not None else None, **({"start": start} if start else {}))
    return PhaseResult("")


def load(ctx, cfg, run) -> PhaseResult:
    return PhaseResult(run.info.run_id, dict(run.data.metrics))


def summary(result: PhaseResult, cfg) -> str:
    epochs = generators.get(cfg.generator.kind).checkpoints(result.source_run_id)
    return f"generator run {result.run_id}: checkpoints at epochs {', '.join(map(str, epochs))}"
