"""``--freeze features``: the frozen network's feature vectors, computed once, and a head trained on them.

The features of every train / validation / test image (the input of the
pretrained classifier, e.g. EfficientNet-Lite0's 1280-d pooled vector) are
computed once without augmentation and stored in the run directory as
``features.npz`` (no pickle) with ``features.json`` naming what they were
computed from: a hash of the frozen network's weights and input size and of
the data (files with sizes and times, or the in-memory pixels) and its
split. A later run with the same network and data finds them among its
sibling run directories and skips the extraction. Each epoch then costs only
the head: a (batch, features) x (features, classes) product.

The run directory ends up like any other: ``model.keras`` / ``best.keras``
are the full network (frozen body + trained head), so ``evaluate`` and
``predict`` work on images as usual.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np

SPLITS = ("train", "val", "test")


def _data_digest(data) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([data.source, data.cfg.path, data.cfg.val_split, data.seed, data.class_names,
                         list(data.cfg.resize_short), data.cfg.eval_resize_short]).encode())
    for split in SPLITS:
        ex = getattr(data, split)
        if ex is None:
            h.update(b"none")
            continue
        h.update(np.asarray(ex.labels).tobytes() if ex.labels is not None else b"")
        if ex.kind == "images":
            h.update(np.ascontiguousarray(ex.images).tobytes())
        elif ex.kind == "paths":
            for p in ex.paths:
                st = Path(p).stat()
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            for p in ex.shards:
                st = Path(p).stat()
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _extract(extractor, data, log) -> dict[str, np.ndarray]:
    arrays = {}
    for split in SPLITS:
        ds = data.eval_dataset(split) if getattr(data, split) is not None else None
        if ds is None:
            continue
        feats, labels = [], []
        for x, y in ds:
            feats.append(np.asarray(extractor(x, training=False), dtype=np.float32))
            labels.append(np.argmax(y.numpy(), axis=1).astype(np.int32))
        arrays[f"{split}_x"], arrays[f"{split}_y"] = np.concatenate(feats), np.concatenate(labels)
        log(f"features of {len(arrays[f'{split}_y'])} {split} images: {arrays[f'{split}_x'].shape[1]}-d")
    return arrays


class _HeadTrainer:
    """Trains the classifier block on in-memory feature vectors, one compiled call per epoch.

    Keras' fit() spends ~0.1 s per epoch on setup (iterators, callbacks) -- more than an epoch of a
    small classifier on a few thousand vectors. Here the whole epoch (all its mini-batches, in the
    seeded order) is one ``tf.function`` call, validation one more.
    """

    def __init__(self, head, optimizer, loss_fn, batch_size: int, seed: int):
        import tensorflow as tf

        self.head, self.optimizer, self.loss_fn, self.batch, self.seed = head, optimizer, loss_fn, batch_size, seed
        variables = head.trainable_variables
        optimizer.build(variables)

        @tf.function
        def epoch(x, y, order):
            n = tf.shape(order)[0]
            steps = (n + batch_size - 1) // batch_size
            total_loss, correct = tf.constant(0.0), tf.constant(0.0)
            for i in tf.range(steps):
                idx = order[i * batch_size:tf.minimum((i + 1) * batch_size, n)]
                xb, yb = tf.gather(x, idx), tf.gather(y, idx)
                with tf.GradientTape() as tape:
                    logits = tf.cast(head(xb, training=True), tf.float32)
                    loss = loss_fn(yb, logits)
                grads = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(grads, variables))
                size = tf.cast(tf.shape(idx)[0], tf.float32)
                total_loss += loss * size
                correct += tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == tf.argmax(yb, 1), tf.float32))
            return total_loss / tf.cast(n, tf.float32), correct / tf.cast(n, tf.float32)

        @tf.function
        def evaluate(x, y):
            logits = tf.cast(head(x, training=False), tf.float32)
            acc = tf.reduce_mean(tf.cast(tf.argmax(logits, 1) == tf.argmax(y, 1), tf.float32))
            return loss_fn(y, logits), acc

        self.epoch, self.evaluate = epoch, evaluate

    def run(self, x, y, val, epochs: int, console, epoch_line, writer=None):
        """-> (history rows, best validation accuracy, its epoch, its weights); ``epoch_line(row, epochs)``
        is the task's line for a finished epoch."""
        import tensorflow as tf

        x, y = tf.constant(x), tf.constant(y)
        val = (tf.constant(val[0]), tf.constant(val[1])) if val is not None else None
        history, best, best_epoch, best_weights = [], -1.0, None, None
        for e in range(epochs):
            order = tf.constant(np.random.default_rng([self.seed, e, 0xFEA7]).permutation(int(x.shape[0])), tf.int32)
            t0 = time.perf_counter()
            loss, acc = self.epoch(x, y, order)
            row = {"epoch": e + 1, "loss": float(loss), "accuracy": float(acc)}
            if val is not None:
                vl, va = self.evaluate(*val)
                row.update(val_loss=float(vl), val_accuracy=float(va))
            seconds = time.perf_counter() - t0
            row.update(lr=float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
                       seconds=round(seconds, 5), images_per_s=round(int(x.shape[0]) / seconds, 1))
            history.append(row)
            if writer is not None:
                with writer.as_default():
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
                        if k in row:
                            tf.summary.scalar(f"epoch_{k}", row[k], step=e)
            score = row.get("val_accuracy", row["accuracy"])
            if score > best:
                best, best_epoch, best_weights = score, e + 1, self.head.get_weights()
            console.print(epoch_line(row, epochs), soft_wrap=True)
        return history, best, best_epoch, best_weights


def fit_features(cfg, task, run, data, policy, console, log, t_start):
    """Train the head on stored features -> RunResult."""
    from cnnctl import config as config_mod
    from cnnctl.tasks import classify
    from cnnctl.train import finetune
    from cnnctl.train.optim import make_optimizer, make_schedule
    from cnnctl.train.rundir import atomic_save_model, atomic_write_text

    tc = cfg.train
    atomic_write_text(run.file("config.toml"), config_mod.dumps(cfg))
    task.write_run_files(run, data)
    plan = finetune.build(cfg.finetune, data.num_classes, log=log)
    extractor = keras.Model(plan.model.inputs[0], plan.features, name="features")
    from cnnctl.train import feature_cache

    key = feature_cache.key(feature_cache.weights_digest(extractor), _data_digest(data))
    arrays, info = feature_cache.load_or_compute(run, key, lambda: _extract(extractor, data, log), log)
    extract_s, reused = info["seconds"], info["reused"]

    k = data.num_classes
    # The classifier block on the stored vectors: a sub-model of the full network sharing its layers,
    # so training it trains the saved network's classifier.
    head = keras.Model(plan.features, plan.model.outputs[0], name="classifier")
    steps = int(np.ceil(len(arrays["train_y"]) / tc.batch_size))
    optimizer = make_optimizer(cfg.optimizer, make_schedule(cfg.schedule, cfg.optimizer.lr, steps, tc.epochs))
    onehot = lambda y: np.eye(k, dtype=np.float32)[y]
    val = (arrays["val_x"], onehot(arrays["val_y"])) if "val_y" in arrays else None
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(run.file("tensorboard") / "train"))
    trainer = _HeadTrainer(head, optimizer, classify.loss(tc.label_smoothing), tc.batch_size, tc.seed)
    history, best_acc, best_epoch, best_weights = trainer.run(arrays["train_x"], onehot(arrays["train_y"]), val,
                                                              tc.epochs, console, task.epoch_line, writer)
    writer.close()
    train_s = sum(r["seconds"] for r in history)

    last = head.get_weights()
    head.set_weights(best_weights)
    atomic_save_model(plan.model, run.file("best.keras"))
    head.set_weights(last)
    atomic_save_model(plan.model, run.file("model.keras"))
    metrics = {"params": int(sum(np.prod(w.shape) for w in head.trainable_weights)), "precision": policy,
               "replicas": 1, "epochs_trained": len(history), "wall_time_s": round(time.perf_counter() - t_start, 2),
               "train_time_s": round(train_s, 3), "seconds_per_epoch": round(train_s / max(1, len(history)), 4),
               "feature_extraction_s": round(extract_s, 2), "features_reused": reused,
               "best_epoch": best_epoch, "best_val_accuracy": best_acc}
    if "test_y" in arrays:
        classify.compile_model(head, "sgd", k, tc.label_smoothing)  # for evaluate() only
        r = head.evaluate(arrays["test_x"], onehot(arrays["test_y"]), verbose=0, return_dict=True)
        metrics.update(test_loss=float(r["loss"]), test_accuracy=float(r["accuracy"]), test_top5=float(r["top5"]),
                       test_images=len(arrays["test_y"]))
    last = history[-1] if history else {}
    metrics.update({m: last[m] for m in ("loss", "accuracy", "val_loss", "val_accuracy") if m in last})
    from cnnctl.train.finish import finish_run

    return finish_run(run, task, console, data, history, metrics, f"{cfg.model.name} features -> head on {data.source}")
