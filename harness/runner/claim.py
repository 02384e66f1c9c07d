"""The claim on a key: no two workers (processes, machines) compute one key at once.

A phase that takes minutes announces its key with a RUNNING run before it computes; a worker that
finds a live rival's announcement waits for it and then reuses its run (or continues it, if the
rival died). Announce-then-check needs no lock: whichever announces second sees the first, and two
that announce at the same moment both step back and retry after a random pause.
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.context import Context


def open_run(ctx: Context, name: str, key: str, found, claim: bool, tags: dict, system_metrics: bool):
    """(the run opened for phase `name`, the FINISHED run it reuses or None), from the one lookup of
    `key` made before (`found`). With `claim`, a live worker's RUNNING run with the key is waited for."""
    from harness.tracking import store as st
    store, use_cache = ctx.store, ctx.use_cache
    while True:
        if found is None and use_cache:
            found = store.lookup(key)
        hit = found.finished if found is not None and use_cache else None
        if hit is None and claim and store.live(found):
            found = store.wait_for_others(key, name, found)
            continue  # it finished (reuse it) or died (compute)
        marks = {"harness.cache_hit": key, "harness.reused_from": hit.info.run_id} if hit else {"harness.cache_key": key}
        run = st.start(store, name, {**tags, **marks}, system_metrics=system_metrics and hit is None)
        if hit is None and claim and store.computing(key, besides=run.info.run_id):
            # Announced at the same moment as another worker: whoever sees a rival after announcing
            # steps back (both may), so that at most one computes; the first to come back wins.
            st.step_back(store, run)
            time.sleep(random.uniform(0.2, 1.5))
            found = None
            continue
        return run, hit
