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
