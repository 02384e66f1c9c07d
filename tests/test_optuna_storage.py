"""Optuna storages shared by workers: the private attributes the grid's queue stands on, checked so
that an Optuna release that changes them fails here, by name, instead of in a worker."""
from __future__ import annotations

import optuna

from harness import grid, optuna_storage


def test_the_optuna_internals_a_grid_claims_items_with(tmp_path):
    study, created = grid.open_grid("q", f"sqlite:///{tmp_path / 'optuna.db'}")
    assert created
    storage, study_id = optuna_storage.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert study_id == storage.get_study_id_from_name("q")
    for seed in (0, 1):
        study.enqueue_trial({}, user_attrs={"cell": "all", "seed": seed})
    first, second = grid.claim_item(study), grid.claim_item(study)
    assert (first[1:], second[1:]) == (("all", 0), ("all", 1))
    assert grid.claim_item(study) is None  # a RUNNING item is never claimed again; no trial is made
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING] * 2
    storage.record_heartbeat(first[0])  # what the item's heartbeat thread calls
    assert storage.get_trial(first[0]).number == 0
