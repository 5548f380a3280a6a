"""Classification metrics against numbers worked out by hand."""

import math

import numpy as np
import pytest

from cnnctl.tasks.classify import evaluate_predictions


def test_per_class_precision_recall_f1_from_a_hand_made_confusion_matrix():
    # Rows: true class, columns: predicted class. Class 3 is never predicted.
    confusion = np.array([[3, 1, 0, 0],
                          [0, 2, 2, 0],
                          [1, 0, 1, 0],
                          [1, 0, 0, 0]])
    labels, probs = [], []
    for true in range(4):
        for pred in range(4):
            for _ in range(confusion[true, pred]):
                row = np.full(4, 0.1)
                row[pred] = 0.7           # the predicted class gets 0.7, the rest 0.1 each
                labels.append(true)
                probs.append(row)
    out = evaluate_predictions(np.array(labels), np.array(probs), ["a", "b", "c", "d"])
    assert out["confusion"] == confusion.tolist() and out["images"] == 11
    # precision = diagonal / column sum, recall = diagonal / row sum, F1 = 2PR / (P + R):
    #   a: 3/5, 3/4 -> 2/3     b: 2/3, 2/4 -> 4/7     c: 1/3, 1/2 -> 2/5     d: 0 (never predicted), 0/1 -> 0
    expected = {"a": (3 / 5, 3 / 4, 2 / 3, 4), "b": (2 / 3, 1 / 2, 4 / 7, 4),
                "c": (1 / 3, 1 / 2, 2 / 5, 2), "d": (0.0, 0.0, 0.0, 1)}
    for row in out["per_class"]:
        p, r, f1, support = expected[row["class"]]
        assert row["precision"] == pytest.approx(p, abs=1e-12)
        assert row["recall"] == pytest.approx(r, abs=1e-12)
        assert row["f1"] == pytest.approx(f1, abs=1e-12)
        assert row["support"] == support
    assert out["top1"] == pytest.approx(6 / 11, abs=1e-12)
    # 6 right at p = 0.7, 5 wrong where the true class had 0.1.
    assert out["loss"] == pytest.approx(-(6 * math.log(0.7) + 5 * math.log(0.1)) / 11, abs=1e-12)
    assert out["top4"] == 1.0         # four classes: the true one is always among the top 4


def test_top5_counts_the_true_class_anywhere_in_the_five_most_probable():
    probs = np.tile(np.arange(8, dtype=float)[::-1] / 28, (3, 1))   # class 0 most probable ... class 7 least
    out = evaluate_predictions(np.array([0, 4, 5]), probs, [str(i) for i in range(8)])
    assert out["top1"] == pytest.approx(1 / 3) and out["top5"] == pytest.approx(2 / 3)
