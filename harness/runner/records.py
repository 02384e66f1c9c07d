"""What a phase's run records besides its outputs: the digests of the data it read (tags), MLflow's
dataset records (the runs table's Datasets column), and the metrics of in-memory phases, in batches."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.runner.keys import Row

if TYPE_CHECKING:
    from harness.config import Config
    from harness.context import Context

CONTEXTS = {"train": "train", "val": "validation", "test": "test", "pool": "pool"}  # MLflow's dataset contexts


def flush(ctx: Context, pending: dict[str, dict]) -> None:
    """Write the params and metrics gathered from in-memory phases in one call, and empty them."""
    if pending["params"] or pending["metrics"]:
        from harness.tracking.store import log_batch
        log_batch(params=pending["params"], metrics=pending["metrics"], client=ctx.store.client)
        pending["params"], pending["metrics"] = {}, {}


def data_tags(ctx: Context, row: Row, cfg: Config) -> dict[str, str]:
    """The content digest of each split the phase reads, so that comparisons can check them."""
    if not row.data:
        return {}
    splits = row.splits(ctx, cfg)
    return {"harness.data_source": splits.source, **{f"harness.data.{d}": splits.digest(d) for d in row.data}}


def log_datasets(ctx: Context, row: Row, cfg: Config, inputs: dict) -> None:
    """MLflow's dataset records of what the phase reads, in one call: each split with the digest of its
    full content (MLflow's own numpy digest samples the first values only), the kept images of the
    phases it records (the synthetic arm's), and what it read from outside (its module's
    `outside_records`: an outside generator's folder or model)."""
    import warnings

    import mlflow

    from harness.tracking.store import log_inputs
    outside_records = getattr(row.phase.module, "outside_records", None)
    outside = outside_records(ctx, cfg) if outside_records else []
    if not row.data and not outside:
        return
    splits = row.splits(ctx, cfg)
    label = splits.uri.rstrip("/").rsplit("/", 1)[-1] or "data"
    sets = [(f"{label}/{CONTEXTS[d]}", getattr(splits, f"{d}_x"), getattr(splits, f"{d}_y"),
             splits.digest(d).split(":")[1], CONTEXTS[d]) for d in row.data]
    for u in row.phase.logs_inputs:
        kept = inputs[u]
        sets.append((f"{label}/synthetic", kept.images, kept.labels, kept.downstream_key.split(":")[-1], "synthetic"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the source can be interpreted in multiple ways": a local folder either way
        datasets = [mlflow.data.from_numpy(x.numpy(), targets=y.numpy(), name=n, digest=dg, source=splits.uri or None)
                    for n, x, y, dg, _ in sets]
        datasets += [mlflow.data.from_numpy(r.images.numpy(), targets=None if r.labels is None else r.labels.numpy(),
                                            name=r.name, digest=r.digest, source=r.source) for r in outside]
    log_inputs(datasets, [c for *_, c in sets] + [r.context for r in outside])
