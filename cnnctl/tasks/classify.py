"""Image classification: softmax cross-entropy on one-hot (possibly mixed/smoothed) targets."""

from __future__ import annotations

from typing import ClassVar

import keras

from cnnctl.tasks.base import TASKS, ClassNamesRunFile, Field, Task


@keras.saving.register_keras_serializable(package="cnnctl")
class MulticlassHinge(keras.losses.Loss):
    """The multiclass SVM loss of CS231n (Weston & Watkins): sum_{j != y} max(0, s_j - s_y + margin).

    Targets are one-hot (or mixed) rows; the true-class score is ``sum_j y_j s_j``.
    """

    def __init__(self, margin: float = 1.0, name: str = "multiclass_hinge", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        true_score = keras.ops.sum(y_true * y_pred, axis=-1, keepdims=True)          # (b, 1)
        margins = keras.ops.relu(y_pred - true_score + self.margin) * (1.0 - y_true)  # (b, k), 0 at y
        return keras.ops.sum(margins, axis=-1)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def loss(label_smoothing: float = 0.0, kind: str = "softmax") -> keras.losses.Loss:
    """The training loss: softmax cross-entropy (default) or the multiclass hinge of a linear SVM."""
    if kind == "multiclass_hinge":
        return MulticlassHinge()
    # Targets are one-hot (b, k) so label smoothing and MixUp share one loss.
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)


def metrics(num_classes: int) -> list:
    return [keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5")]


def compile_model(model, optimizer, num_classes: int, label_smoothing: float = 0.0, jit: bool = False,
                  loss_kind: str = "softmax"):
    model.compile(optimizer=optimizer, loss=loss(label_smoothing, loss_kind), metrics=metrics(num_classes),
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




@TASKS.register("classify", about="image classification: softmax (or hinge) over class folders")
class ClassifyTask(ClassNamesRunFile, Task):
    """Image classification: one label per image, ``classes.json`` in the run, accuracy and top-5."""

    name = "classify"
    progress_fields = (Field("loss", "loss"), Field("accuracy", "acc"))
    monitor = "val_accuracy"
    modes: ClassVar[dict[str, str]] = {"loss": "min", "accuracy": "max", "top5": "max"}

    def build(self, cfg, data, log):
        if not cfg.finetune.freeze:
            return super().build(cfg, data, log)
        from cnnctl.train import finetune

        plan = finetune.build(cfg.finetune, data.num_classes, log=log)
        log(f"fine-tuning ({cfg.finetune.freeze}): {len(plan.frozen)} frozen layer(s), "
            f"{len(plan.body_paths)} body variable(s) at lr x {cfg.finetune.body_lr_scale}, head: {', '.join(plan.head)}")
        return plan.model, plan.body_paths

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        compile_model(model, optimizer, data.num_classes, cfg.train.label_smoothing, cfg.train.jit,
                      loss_kind=loss_kind or "softmax")

    def final_metrics(self, model, data) -> dict:
        test = data.eval_dataset("test")
        if test is None:
            return {}
        from cnnctl.data.pipeline import no_empty_replica

        test = no_empty_replica(test, model.distribute_strategy.num_replicas_in_sync)
        result = model.evaluate(test, verbose=0, return_dict=True)
        return {"test_loss": float(result["loss"]), "test_accuracy": float(result["accuracy"]),
                "test_top5": float(result["top5"]), "test_images": data.test.count}

    def summary_keys(self) -> tuple[str, ...]:
        return ("test_accuracy", "test_top5", "test_loss", "val_accuracy", "accuracy")
