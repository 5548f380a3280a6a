"""The training loop: recipe -> data -> model in strategy scope -> ``fit`` per epoch -> run directory.

``fit`` is called once per epoch so that a resumed run can start the epoch
it was killed in at the exact batch it stopped after (Keras'
``BackupAndRestore`` restarts the epoch, keras#19179). Data order and
augmentation are functions of (seed, epoch, batch), the optimizer's step
counter drives the LR schedule, and model + optimizer variables (including
dropout RNG state) are in the backup, so a resumed ``--deterministic`` run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from rich.markup import escape  # paths and class names may contain [brackets]

from cnnctl import config as config_mod
from cnnctl.config import Config
from cnnctl.errors import CnnctlError
from cnnctl.train.finish import RunResult, finish_run


def _meta(cfg: Config) -> dict:
    """The registry metadata of the recipe's model ({} for a keras.applications backbone)."""
    from cnnctl.models import MODELS

    return {} if cfg.model.name.startswith("keras:") else MODELS.get(cfg.model.name).meta


def train(cfg: Config, resume: str | os.PathLike | None = None, console=None,
          progress_factory: Callable | None = None) -> RunResult:
    """Train per ``cfg`` (or continue the run in ``resume``) and return where it went and how it did."""
    from rich.console import Console

    console = console or Console()
    log = lambda msg: console.print(f"[dim]{escape(msg)}[/]")
    # Fail fast on an unknown task, monitor, model or option, before any data is read or folder made.
    from cnnctl import tasks
    from cnnctl.models import check_options
    from cnnctl.train.rundir import RunDir

    if not cfg.task:  # the recipe names no task: the model's registry entry implies it
        cfg.task = _meta(cfg).get("task", "classify")
    task = tasks.get(cfg.task)
    if not cfg.train.monitor:
        cfg.train.monitor = task.monitor
    task.mode(cfg.train.monitor)
    if cfg.schedule.name == "plateau":
        task.mode(cfg.schedule.monitor)
    if not cfg.model.name.startswith("keras:"):  # keras.applications backbones of `finetune` are not ours
        check_options(cfg.model.name, {k: v for k, v in cfg.model.options.items() if k != "input_shape"})
    from cnnctl.train import workers

    role = workers.Role.of(cfg.train.strategy, cfg.train.cluster)
    if not role.chief:  # a non-chief worker says nothing (the chief speaks for the job) and writes to a scratch folder
        console = Console(quiet=True)
        log = lambda msg: None
    if resume is not None:
        run = RunDir.open(resume)
        if not run.has_backup():
            raise CnnctlError(f"{run.path} has no resume backup (it was stopped before its first checkpoint)",
                              hint="start it again with `cnnctl train` instead of --resume")
        run = role.own_copy(run)
    else:
        run = None
    # The lock comes first: a second process must not touch a run in use.
    if run is not None:
        run.lock()
        role.announce(run)
    try:
        return _train_locked(cfg, task, run, console, log, progress_factory, role)
    finally:
        if run is not None:
            run.unlock()
        role.clean_up()


def _train_locked(cfg: Config, task, run, console, log, progress_factory, role) -> RunResult:
    from cnnctl.train.rundir import RunDir, default_run_name
    from cnnctl.train.runtime import configure, pick_strategy

    t_start = time.perf_counter()
    tc = cfg.train
    policy = configure(tc.precision, tc.deterministic, tc.seed, tc.devices, tc.strategy, tc.cluster,
                       model=cfg.model.name, log=log)
    if tc.precision == "auto":   # the run's config.toml records the policy chosen, and why (a resume reuses it)
        from cnnctl.train.runtime import explain_precision, wants_multiworker

        why = explain_precision("auto", cfg.model.name, measure=not wants_multiworker(tc.strategy, tc.cluster))[1]
        tc = dataclasses.replace(tc, precision=policy, precision_why=why)
        cfg = dataclasses.replace(cfg, train=tc)
    strategy = pick_strategy(tc.strategy, tc.cluster)
    replicas = strategy.num_replicas_in_sync
    global_batch = tc.batch_size
    if global_batch % replicas:
        raise CnnctlError(f"batch size {global_batch} is not divisible by the {replicas} replicas",
                          hint=f"use a multiple of {replicas}, e.g. --batch-size {replicas * max(1, global_batch // replicas)}")
    per_replica_batch = global_batch // replicas

    data = task.data(cfg, global_batch, log)
    steps = data.steps("train")

    if run is None:
        run = RunDir.create(role.out_dir(tc.out_dir),
                            tc.name or default_run_name(cfg.model.name.replace(":", "-"), data.source))
        run.lock()
        role.announce(run)
        created = True
    else:
        created = False

    memorize = not cfg.finetune.freeze and _meta(cfg).get("fit") == "memorize"
    if cfg.finetune.freeze == "features" and not created:
        raise CnnctlError("a features-mode fine-tune trains in seconds once its features exist; it has no resume",
                          hint="run the same `cnnctl finetune` again: it reuses the stored features")
    if memorize and not created:
        raise CnnctlError(f"{cfg.model.name} memorises its training set in one pass and has nothing to resume",
                          hint="run `cnnctl train` again instead of --resume")
    try:
        if memorize:
            return _memorize(cfg, task, run, data, policy, console, t_start)
        if cfg.finetune.freeze == "features":
            from cnnctl.train.features import fit_features

            return fit_features(cfg, task, run, data, policy, console, log, t_start)
        return _fit(cfg, task, run, created, data, strategy, policy, replicas, per_replica_batch, steps,
                    console, log, progress_factory, t_start, _layout(role, replicas, per_replica_batch))
    except BaseException:
        if created and not run.has_backup():
            import shutil

            shutil.rmtree(run.path, ignore_errors=True)  # nothing worth keeping: no checkpoint yet
        raise
    finally:
        if created:
            run.unlock()


def _layout(role, replicas: int, per_replica_batch: int) -> str:
    """How the global batch is split, for the line printed before training."""
    if role.workers <= 1:
        return f"{replicas} replica(s) x {per_replica_batch}"
    # Every worker builds the same (seed, epoch)-ordered global batches and keeps its slice of each
    # (AutoShardPolicy.DATA), so the steps are those of one process with the same global batch.
    return (f"{role.workers} workers x {replicas // role.workers} replica(s) x {per_replica_batch}; "
            "data sharded by example: each worker keeps its slice of every global batch")


def _fit(cfg, task, run, created, data, strategy, policy, replicas, per_replica_batch, steps,
         console, log, progress_factory, t_start, layout) -> RunResult:
    import keras

    from cnnctl.data.pipeline import no_empty_replica
    from cnnctl.train import callbacks as cb
    from cnnctl.train.optim import make_optimizer, make_schedule
    from cnnctl.train.rundir import atomic_save_model, atomic_write_text

    tc = cfg.train
    if created:
        atomic_write_text(run.file("config.toml"), config_mod.dumps(cfg))
        task.write_run_files(run, data)
    else:
        task.check_resume(run, data)
        atomic_write_text(run.file("config.toml"), config_mod.dumps(cfg))
    task.prepare(run, data, cfg, log)

    with strategy.scope():
        model, scaled_paths = task.build(cfg, data, log)
        schedule = make_schedule(cfg.schedule, cfg.optimizer.lr, steps, tc.epochs)
        optimizer = make_optimizer(cfg.optimizer, schedule, scaled_paths, cfg.finetune.body_lr_scale)

        task.compile(model, optimizer, cfg, data, loss_kind=_meta(cfg).get("loss", ""))
        optimizer.build(model.trainable_variables)
    state_variables = task.state_variables(model)

    guard = cb.NaNGuard(task.loss_keys)
    best = cb.BestModel(run, tc.monitor, task.mode(tc.monitor))
    plateau = (cb.ReduceOnPlateau(cfg.schedule.monitor, cfg.schedule.gamma, cfg.schedule.patience,
                                  cfg.schedule.min_lr, mode=task.mode(cfg.schedule.monitor))
               if cfg.schedule.name == "plateau" else None)
    history: list[dict[str, float]] = []
    start_epoch, start_step = 0, 0
    if not created:
        state = run.load_backup(model, state_variables)
        start_epoch, start_step = int(state["epoch"]), int(state["step_in_epoch"])
        history = list(state.get("history", []))
        best.set_state(state.get("best", {}))
        if plateau:
            plateau.set_state(state.get("plateau", {}))
        if cfg.schedule.name == "constant":  # a rate given on resume wins over the saved one
            model.optimizer.learning_rate.assign(cfg.optimizer.lr)
        if start_step >= steps:
            start_epoch, start_step = start_epoch + 1, 0
        console.print(f"resuming {escape(str(run.path))} at epoch {start_epoch + 1}, step {start_step} "
                      f"(global step {state['global_step']})")

    def loop_state(epoch: int, step_in_epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "history": history, "best": best.get_state(),
                "plateau": plateau.get_state() if plateau else {}}

    from cnnctl.models import trainable_params

    params = trainable_params(model)
    where = "" if cfg.data.path == data.source else " " + (escape(cfg.data.path) or "(bundled)")
    console.print(f"[bold]{cfg.model.name}[/] ({params:,} parameters) on [bold]{data.source}[/]{where}: "
                  f"{escape(data.describe())}", soft_wrap=True)
    console.print(f"{tc.epochs} epochs x {steps} steps, batch {tc.batch_size} "
                  f"({layout}), {_precision_words(cfg)}, "
                  f"{cfg.optimizer.name} lr {cfg.optimizer.lr} {cfg.schedule.name} -> {escape(str(run.path))}",
                  soft_wrap=True)

    progress = (progress_factory or _default_progress)(console)
    bar = cb.RichProgress(progress, tc.epochs, steps, tc.batch_size, task.progress_fields)
    backup_cb = cb.StepBackup(run, tc.checkpoint_every, None, guard, state_variables)
    tensorboard = keras.callbacks.TensorBoard(str(run.file("tensorboard")), write_graph=False, update_freq="epoch")
    # the task's epoch measurements come before the callbacks that read them (best, TensorBoard, plateau)
    callbacks = ([bar, guard, backup_cb, *task.epoch_callbacks(run, data, cfg), best, tensorboard]
                 + ([plateau] if plateau else []))
    val_ds = data.eval_dataset("val")
    val_ds = None if val_ds is None else no_empty_replica(val_ds, replicas)
    fit_time, fit_images = 0.0, 0

    with progress:
        for epoch in range(start_epoch, tc.epochs):
            first = start_step if epoch == start_epoch else 0
            for c in (guard, backup_cb):
                c.first_step = first
            backup_cb.state_fn = lambda s, e=epoch: loop_state(e, s)
            bar.start_epoch(epoch, first)
            t0 = time.perf_counter()
            fit_hist = model.fit(data.train_dataset(epoch, skip_batches=first), epochs=epoch + 1,
                                 initial_epoch=epoch, validation_data=val_ds, callbacks=callbacks, verbose=0,
                                 shuffle=False)
            seconds = time.perf_counter() - t0
            bar.end_epoch()
            if guard.bad_step is not None:
                raise CnnctlError(
                    f"the loss became {guard.bad_loss} at epoch {epoch + 1}, step {guard.bad_step}; training stopped",
                    hint="lower the learning rate (--set optimizer.lr=...), clip gradients (--clipnorm 1.0) "
                         "or check the data for broken labels; the last good checkpoint is kept: "
                         f"continue with `cnnctl train --resume {run.path} --set optimizer.lr=...`")
            # examples an epoch trains on: images, or what the data counts instead (segmentation: windows)
            images = min(getattr(data, "train_examples", data.train.count), (steps - first) * tc.batch_size)
            fit_time += seconds
            fit_images += images
            row = {"epoch": epoch + 1, **{k: float(v[-1]) for k, v in fit_hist.history.items()},
                   "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),  # schedule value now
                   "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1)}
            history.append(row)
            run.write_history(history)
            atomic_save_model(model, run.file("model.keras"))
            run.save_backup(model, loop_state(epoch + 1, 0), state_variables)
            console.print(task.epoch_line(row, tc.epochs), soft_wrap=True)
    after = task.after_training(run, model, data, lambda m: console.print(escape(m), soft_wrap=True))
    metrics = _final_metrics(task, model, data, history, params, fit_time, fit_images, policy, replicas,
                             time.perf_counter() - t_start, best)
    metrics.update(after)
    return finish_run(run, task, console, data, history, metrics, f"{cfg.model.name} on {data.source}")


def _memorize(cfg, task, run, data, policy, console, t_start) -> RunResult:
    """Non-parametric models (kNN): store the training split, then measure on validation and test."""
    import keras
    import numpy as np

    from cnnctl import tasks
    from cnnctl.train.rundir import atomic_save_model, atomic_write_text

    atomic_write_text(run.file("config.toml"), config_mod.dumps(cfg))
    task.write_run_files(run, data)
    t0 = time.perf_counter()
    images, labels = [], []
    for x, y in data.eval_dataset("train"):  # no augmentation, in file order
        images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        labels.append(np.argmax(y.numpy(), axis=1))
    images, labels = np.concatenate(images), np.concatenate(labels)
    options = {**cfg.model.options, "memory_size": len(images)}
    model = tasks.build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, options=options)),
                        data.num_classes)
    model.get_layer("neighbours").memorize(images, labels)
    task.compile(model, keras.optimizers.SGD(), cfg, data)
    console.print(f"[bold]{cfg.model.name}[/] memorised {len(images):,} training images "
                  f"({images[0].size}-dimensional) -> {escape(str(run.path))}", soft_wrap=True)
    row = {"epoch": 1}
    if data.val is not None:
        result = model.evaluate(data.eval_dataset("val"), verbose=0, return_dict=True)
        row.update(val_loss=float(result["loss"]), val_accuracy=float(result["accuracy"]))
    seconds = time.perf_counter() - t0
    row.update(seconds=round(seconds, 3), images_per_s=round(len(images) / seconds, 1))
    history = [row]
    atomic_save_model(model, run.file("model.keras"))
    atomic_save_model(model, run.file("best.keras"))
    metrics = _final_metrics(task, model, data, history, 0, seconds, len(images), policy, 1,
                             time.perf_counter() - t_start, None)
    return finish_run(run, task, console, data, history, metrics, f"{cfg.model.name} memorised {data.source}")


def _precision_words(cfg) -> str:
    """The policy in force, with the reason when ``auto`` chose it: "float32 (auto: for X, ...)"."""
    from cnnctl.train.runtime import explain_precision

    policy, why = explain_precision(cfg.train.precision, cfg.model.name)
    if cfg.train.precision_why:
        why = cfg.train.precision_why
    return policy if why == "asked for" else f"{policy} ({escape(why)})"


def _default_progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.fields[ips]:>6.0f} img/s"),
        TextColumn("{task.fields[metrics]}"),
        console=console, transient=True)


def _final_metrics(task, model, data, history, params, fit_time, fit_images, policy, replicas, wall, best) -> dict:
    metrics: dict[str, Any] = {"params": params, "precision": policy, "replicas": replicas,
                               "epochs_trained": len(history), "wall_time_s": round(wall, 2),
                               "train_time_s": round(fit_time, 2),
                               "train_images_per_s": round(fit_images / fit_time, 1) if fit_time else None,
                               "best_epoch": None if best is None or best.best_epoch is None else best.best_epoch + 1}
    if best is not None:
        metrics["best_" + best.monitor] = best.best
    metrics.update(task.final_metrics(model, data))
    if history:
        last = history[-1]
        keys = [f.key for f in task.progress_fields]
        metrics.update({k: last[k] for k in keys + [f"val_{k}" for k in keys] if k in last})
    return metrics
