"""Callbacks: progress, NaN guard, step backups, best model, plateau LR, history.

The engine calls ``fit`` once per epoch (so a resumed epoch can start at
its k-th batch); callbacks that keep state across epochs expose
``get_state``/``set_state`` and their state travels in the resume backup.
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras


class RichProgress(keras.callbacks.Callback):
    """A rich progress bar per epoch: step, ETA, images/s and the task's fields (loss, accuracy, ...).

    ``fields``: ``cnnctl.tasks.base.Field`` (logs key, label) pairs, shown in order as the
    ``metrics`` field of the bar's task.
    """

    def __init__(self, progress, epochs: int, steps: int, batch_size: int, fields=()):
        super().__init__()
        self.progress, self.epochs, self.steps, self.batch_size = progress, epochs, steps, batch_size
        self.fields = tuple(fields)
        self.task = None

    def _metrics(self, logs) -> str:
        # fields measured only at the epoch's end (a GAN's FID) are left out of the per-step bar
        return "  ".join(f"{f.label} {float(logs[f.key]):.4f}" for f in self.fields if f.key in logs)

    def start_epoch(self, epoch: int, first_step: int):
        self.first_step = first_step
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                           completed=first_step, ips=0.0, metrics=self._metrics({}))
        self.t0, self.timed_steps = None, 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        if self.t0 is None:  # the first step includes tracing: start the clock after it
            self.t0 = now
        else:
            self.timed_steps += 1
        ips = self.timed_steps * self.batch_size / (now - self.t0) if self.timed_steps else 0.0
        self.progress.update(self.task, completed=self.first_step + batch + 1, ips=ips,
                             metrics=self._metrics(logs))

    def end_epoch(self):
        if self.task is not None:
            self.progress.update(self.task, completed=self.steps)
            self.progress.remove_task(self.task)
            self.task = None


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss and remember the step (the last good backup is kept).

    ``keys``: the logs entries that are losses (a GAN has two). A step whose logs hold none of
    them is a bug in the task, not a finite loss: it stops training too.
    """

    def __init__(self, keys=("loss",)):
        super().__init__()
        self.keys = tuple(keys)
        self.bad_step: int | None = None
        self.bad_loss = float("nan")
        self.first_step = 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        present = [k for k in self.keys if k in logs]
        if not present:
            raise RuntimeError(f"the training step logged none of the task's losses {self.keys}: {sorted(logs)}")
        for key in present:
            loss = float(logs[key])
            if not math.isfinite(loss):
                self.bad_step = self.first_step + batch + 1
                self.bad_loss = loss
                self.model.stop_training = True
                return


class StepBackup(keras.callbacks.Callback):
    """Every ``every`` optimizer steps, write a resume backup (model + optimizer + loop state)."""

    def __init__(self, run, every: int, state_fn, guard: NaNGuard, variables=None):
        super().__init__()
        self.run, self.every, self.state_fn, self.guard = run, every, state_fn, guard
        self.variables = variables  # the task's state variables (None: model + its optimizer)
        self.first_step = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.every <= 0 or self.guard.bad_step is not None:
            return
        step_in_epoch = self.first_step + batch + 1
        state = self.state_fn(step_in_epoch)
        if state["global_step"] % self.every == 0:
            self.run.save_backup(self.model, state, self.variables)


class ReduceOnPlateau(keras.callbacks.Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    AlexNet (Krizhevsky et al. 2012, sec. 5): "divide the learning rate by 10
    when the validation error rate stopped improving".
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 2, min_lr: float = 0.0,
                 mode: str = "min"):
        super().__init__()
        self.monitor, self.factor, self.patience, self.min_lr = monitor, factor, patience, min_lr
        self.mode = mode  # "max" or "min", as the task declares for this monitor
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate.assign(max(lr * self.factor, self.min_lr))
            self.wait = 0

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), int(state.get("wait", 0))


class BestModel(keras.callbacks.Callback):
    """Save ``best.keras`` when ``monitor`` improves; ``mode`` ("max"/"min") is the task's word for it."""

    def __init__(self, run, monitor: str, mode: str):
        super().__init__()
        self.run, self.monitor, self.mode = run, monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        from cnnctl.train.rundir import atomic_save_model

        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_epoch = value, epoch
            atomic_save_model(self.model, self.run.file("best.keras"))

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
