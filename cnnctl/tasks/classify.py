"""Image classification: softmax cross-entropy on one-hot (possibly mixed/smoothed) targets."""

from __future__ import annotations

import keras


def loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    # Targets are one-hot (b, k) so label smoothing and MixUp share one loss.
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def metrics(num_classes: int) -> list:
    return [keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")]


def compile_model(model, optimizer, num_classes: int, label_smoothing: float = 0.0, jit: bool = False):
    model.compile(optimizer=optimizer, loss=loss(label_smoothing), metrics=metrics(num_classes),
                  jit_compile=jit)
    return model


def evaluate_predictions(labels, probs, class_names: list[str]) -> dict:
    """Loss, top-1/top-5, per-class precision/recall/F1 and the confusion matrix.

    Args:
        labels: (n,) int true classes.
        probs: (n, k) predicted probabilities.
    """
    import numpy as np

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    pred = probs.argmax(axis=1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0))))
    topk = min(5, k)
    top5 = np.argsort(-probs, axis=1)[:, :topk]
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    return {
        "images": int(n), "loss": loss,
        "top1": float(np.mean(pred == labels)),
        f"top{topk}": float(np.mean(np.any(top5 == labels[:, None], axis=1))),
        "per_class": [{"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
                       "f1": float(f1[i]), "support": int(actual[i])} for i, c in enumerate(class_names)],
        "confusion": matrix.tolist(),
    }
