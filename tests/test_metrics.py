import numpy as np
import pytest

from harness import figures, metrics


def test_evaluate_matches_hand_counts():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    proba = np.eye(3)[pred] * 0.7 + 0.1
    ev = metrics.evaluate(y, proba, ("a", "b", "c"))
    assert ev.metrics["test/accuracy"] == 4 / 6
    assert ev.metrics["test/a/precision"] == 2 / 3 and ev.metrics["test/a/recall"] == 2 / 3
    assert ev.metrics["test/b/precision"] == 2 / 3 and ev.metrics["test/b/recall"] == 1.0
    assert ev.metrics["test/c/f1"] == 0.0
    f1 = {"a": 2 / 3, "b": 0.8, "c": 0.0}
    assert abs(ev.metrics["test/f1_macro"] - np.mean(list(f1.values()))) < 1e-12
    assert abs(ev.metrics["test/f1_weighted"] - (3 * f1["a"] + 2 * f1["b"]) / 6) < 1e-12
    assert ev.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert np.allclose(ev.confidence, 0.8)
    fig = figures.confusion_figure(ev, ("a", "b", "c"))
    assert fig.axes


def test_the_memorization_check_finds_planted_copies():
    import torch

    from harness import quality
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8)
    fresh = torch.randint(0, 256, (80, 3, 32, 32), generator=g, dtype=torch.uint8)
    planted = (real[:20].float() + torch.randn(20, 3, 32, 32, generator=g) * 4).clamp(0, 255).to(torch.uint8)
    m, index, dist = quality.memorization(torch.cat([planted, fresh]), real)
    assert m["memorization/near_copy_share"] == pytest.approx(0.2)  # the 20 planted of 100, none of the fresh ones
    assert index[:20].tolist() == list(range(20)) and (dist[:20] < quality.NEAR_COPY_RMS).all()
    assert (dist[20:] > 0.2).all()
