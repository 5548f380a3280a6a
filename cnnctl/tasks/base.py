"""The contract between the training engine and a family of models (a *task*).

The engine (``cnnctl/train/engine.py``) owns the strategy, run directory and
lock, exact resume, the NaN guard, callbacks, TensorBoard, progress and the
final bookkeeping, once for every family. It knows no task by name: it asks
the recipe's task each question below.

    data        what a batch is; which run files it writes and checks on resume
    model       how the network is built and compiled (or a ``train_step``)
    state       every variable the resume backup must hold (networks, optimizers, RNG)
    progress    the fields of the bar and the epoch line; the monitor and its mode
    evaluation  the keys of ``metrics.json``

Anchors: Lightning's ``LightningModule``, keras-hub's ``Task``, detectron2's
task-free ``TrainerBase`` with hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cnnctl.registry import Registry

TASKS = Registry("task")


@dataclass(frozen=True)
class Field:
    """One number the progress bar and the epoch line show: ``key`` in Keras' logs, shown as ``label``."""

    key: str
    label: str


class Task:
    """Base class: one subclass per family, registered in ``TASKS`` under its recipe name."""

    name = ""
    # The logs keys whose non-finite value stops training (the NaN guard).
    loss_keys: tuple[str, ...] = ("loss",)
    # What the bar and the epoch line show, in order; ``val_`` versions are shown when present.
    progress_fields: tuple[Field, ...] = (Field("loss", "loss"),)
    # The default of ``train.monitor`` for best.keras, and whether larger is better.
    monitor = "val_loss"
    # Every logs key the task measures (without "val_") -> "max" or "min".
    modes: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ progress / monitor
    def mode(self, monitor: str) -> str:
        """"max" or "min" for a logs key, as the task declares it (never guessed from the name)."""
        base = monitor.removeprefix("val_")
        if base not in self.modes:
            from cnnctl.errors import CnnctlError

            keys = sorted(self.modes)
            raise CnnctlError(f"train.monitor = {monitor!r} is not something the {self.name} task measures",
                              hint="choose one of: " + ", ".join(k for b in keys for k in (f"val_{b}", b)))
        return self.modes[base]

    def epoch_line(self, row: dict[str, float], epochs: int) -> str:
        """One line per finished epoch: the task's fields, their validation values, lr, time, speed."""
        parts = [f"epoch {int(row['epoch'])}/{epochs}"]
        parts += [f"{f.label} {row[f.key]:.4f}" for f in self.progress_fields if f.key in row]   # some are val-only
        parts += [f"val_{f.label} {row['val_' + f.key]:.4f}" for f in self.progress_fields if f"val_{f.key}" in row]
        parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f} s", f"{row['images_per_s']:.0f} img/s"]
        return "  ".join(parts)

    # ------------------------------------------------------------------ the questions
    def data(self, cfg, batch_size: int, log):
        """The recipe's data: an object with ``train`` / ``val`` / ``test`` (each ``None`` or with a
        ``count``), ``source``, ``steps(split)``, ``train_dataset(epoch, skip_batches)``,
        ``eval_dataset(split)`` and ``describe()``. By default: images for a network of the recipe's
        input shape (``cnnctl.data.pipeline.DataModule``)."""
        from cnnctl.data.pipeline import DataModule, InputSpec

        return DataModule(cfg.data, InputSpec.from_shape(model_input_shape(cfg)), batch_size, cfg.train.seed,
                          log=log)

    def prepare(self, run, data, cfg, log) -> None:
        """Work that needs the run directory before the model is built (e.g. cached encoder features),
        on a new run and on resume alike."""

    def build(self, cfg, data, log):
        """-> (the network, variable paths the optimizer scales by ``finetune.body_lr_scale``)."""
        return build_model(cfg, data.num_classes), []

    def write_outputs(self, run, data) -> None:
        """Files written after the final evaluation (e.g. the test captions)."""

    def write_run_files(self, run, data) -> None:
        """Files a new run needs beside its model (``classes.json``, ``vocab.json``, ...)."""

    def check_resume(self, run, data) -> None:
        """Raise ``CnnctlError`` when ``data`` is not the data the run was started on."""

    def compile(self, model, optimizer, cfg, data, loss_kind: str = "") -> None:
        raise NotImplementedError

    def state_variables(self, model) -> list:
        """Every variable a resume must restore: the networks, every optimizer (slots, step
        counters, schedule position) and RNG seeds. One network, one optimizer by default."""
        from cnnctl.train.rundir import model_state_variables

        return model_state_variables(model)

    def epoch_callbacks(self, run, data, cfg) -> list:
        """Keras callbacks that measure at each epoch's end and put their numbers into the epoch's logs
        (so they reach history.csv, TensorBoard and the ``best.keras`` monitor)."""
        return []

    def after_training(self, run, model, data, log) -> dict[str, Any]:
        """Work after the last epoch and before the final evaluation, on a new run and on a resumed one
        that had finished its epochs (e.g. R-CNN's SVMs and box regressors, fitted on the fine-tuned
        network's features). It saves what it changes; -> numbers for ``metrics.json``."""
        return {}

    def final_metrics(self, model, data) -> dict[str, Any]:
        """The task's test metrics for ``metrics.json`` (prefixed ``test_``)."""
        return {}

    def summary_keys(self) -> tuple[str, ...]:
        """The ``metrics.json`` keys the results table shows first."""
        return ()


class ClassNamesRunFile:
    """Mixin for tasks whose data has ``class_names``: the run keeps them in ``classes.json`` and a
    resume must bring the same ones."""

    def write_run_files(self, run, data) -> None:
        run.write_json("classes.json", data.class_names)

    def check_resume(self, run, data) -> None:
        from cnnctl.errors import CnnctlError

        saved = run.read_json("classes.json")
        if saved != data.class_names:
            raise CnnctlError(f"the data's classes {data.class_names[:5]}... differ from the run's {saved[:5]}...",
                              hint="resume with the data the run was started on")


def model_input_shape(cfg) -> tuple[int, ...]:
    """The recipe's input shape: ``model.input_shape``, else the architecture's default."""
    from cnnctl import models

    shape = cfg.model.options.get("input_shape")
    return tuple(int(s) for s in shape) if shape else models.default_input_shape(cfg.model.name)


def build_model(cfg, num_classes: int):
    """The recipe's registered architecture with ``num_classes`` outputs."""
    from cnnctl import models

    options = {k: v for k, v in cfg.model.options.items() if k != "input_shape"}
    return models.build(cfg.model.name, num_classes=num_classes, input_shape=model_input_shape(cfg), **options)


def get(name: str) -> Task:
    """The registered task ``name``; an unknown name lists the valid ones."""
    # Importing the task modules registers the built-in tasks.
    import cnnctl.tasks.caption
    import cnnctl.tasks.classify
    import cnnctl.tasks.detect
    import cnnctl.tasks.generate
    import cnnctl.tasks.segment  # noqa: F401

    return TASKS.get(name).fn()
