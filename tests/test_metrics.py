import numpy as np

from harness import metrics


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
    fig = metrics.confusion_figure(ev, ("a", "b", "c"))
    assert fig.axes
