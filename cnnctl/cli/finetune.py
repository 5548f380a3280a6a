"""``cnnctl finetune``: adapt a pretrained network (a run directory or an ImageNet backbone) to new classes."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnctl.cli.common import console, quiet_tensorflow, report_errors
from cnnctl.cli.train import Precision


@report_errors
def finetune(
    recipe: str | None = typer.Argument(None, help="Recipe TOML (default: pipelines/finetune.toml)."),
    data: str = typer.Option(..., "--data", "-d", help="Your images: class folder, CSV, TFRecords, or a bundled set name."),
    from_run: Path | None = typer.Option(None, "--from", help="A cnnctl run directory as the pretrained network."),
    backbone: str | None = typer.Option(None, "--backbone", help="A registered network with pretrained weights, e.g. efficientnet_lite0."),
    weights: str = typer.Option("imagenet", "--weights", "-w", help="With --backbone: imagenet (offline) or a .pth / .weights.h5 / .keras file."),
    freeze: str = typer.Option(..., "--freeze", help="conv | features | partial:N | until:LAYER | none (see the description)."),
    body_lr_scale: float | None = typer.Option(None, "--body-lr-scale", help="Learning rate of the unfrozen pretrained layers relative to the head (default 0.1)."),
    keep_head: bool = typer.Option(False, "--keep-head", help="Keep the pretrained classifier (the data must have its classes)."),
    stages: bool = typer.Option(False, "--stages", help="Two stages: the head alone (conv) for --head-epochs, then the top blocks unfrozen."),
    head_epochs: int | None = typer.Option(None, "--head-epochs", help="Epochs of the first stage of --stages (default: --epochs)."),
    unfreeze: int = typer.Option(2, "--unfreeze", help="With --stages: how many top stages the second stage trains."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a recipe key: --set optimizer.lr=3e-4 (repeatable)."),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="Number of epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Global batch size."),
    name: str | None = typer.Option(None, "--name", help="Run directory name."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the head's initialisation, data split and order."),
    precision: Precision | None = typer.Option(None, "--precision", help="Numeric precision."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable image files instead of stopping."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Parent folder of run directories (default: checkpoints)."),
):
    """Fine-tune a pretrained network on your images; writes an ordinary run directory.

    Freeze modes: **conv** trains only the new classifier head; **features** computes the frozen
    network's feature vectors once (stored in the run) and trains the head on them (each epoch
    costs only the head); **partial:N** freezes the first N stages and trains the rest at
    --body-lr-scale x the head's rate; **until:LAYER** freezes up to a named layer; **none** trains
    everything. Frozen batch-norm layers stay in inference mode (their statistics do not move).

    Examples:

        cnnctl finetune --data photos/ --backbone efficientnet_lite0 --weights imagenet --freeze conv

        cnnctl finetune --data photos/ --backbone efficientnet_lite0 --freeze features --epochs 30

        cnnctl finetune --data new_classes/ --from checkpoints/my-run --freeze partial:2 --body-lr-scale 0.1

        cnnctl finetune --data photos/ --backbone efficientnet_lite0 --freeze conv --stages --unfreeze 2
    """
    quiet_tensorflow()
    from cnnctl import config
    from cnnctl.errors import CnnctlError

    values = {
        "data.path": data, "data.source": "auto", "finetune.freeze": freeze,
        "finetune.from_run": str(from_run) if from_run else None, "finetune.backbone": backbone,
        "finetune.weights": weights, "finetune.body_lr_scale": body_lr_scale,
        "finetune.keep_head": True if keep_head else None, "train.epochs": epochs, "train.batch_size": batch_size,
        "train.name": name, "train.seed": seed, "train.precision": precision.value if precision else None,
        "data.skip_bad": True if skip_bad else None, "train.out_dir": str(out_dir) if out_dir else None,
    }
    cfg = config.load(recipe or "finetune", set_, {k: v for k, v in values.items() if v is not None})
    if head_epochs is not None and head_epochs <= 0:
        raise CnnctlError(f"--head-epochs {head_epochs} must be positive")
    from rich.console import Console

    from cnnctl.train import finetune as ft
    from cnnctl.train.engine import train as run_training
    from cnnctl.train.runtime import start_cluster_first

    chief = start_cluster_first(cfg.train)   # before the backbone is loaded: TF must not have started
    say = console if chief else (lambda stderr=False: Console(quiet=True))
    log = lambda m: say(stderr=True).print(m, style="dim", soft_wrap=True, markup=False)
    source = ft.load_source(cfg.finetune, log=log)
    import dataclasses

    # Check the freeze mode against the network now, before any image is read.
    ft.build(dataclasses.replace(cfg.finetune, keep_head=False), 2, log=lambda m: None, source=source)
    for layer in source.model.layers:
        layer.trainable = True
    _adopt_source(cfg, source)
    if not stages:
        run_training(cfg, console=say())
        return
    if freeze != "conv":
        raise CnnctlError("--stages starts with the head alone: use it with --freeze conv",
                          hint="e.g. --freeze conv --stages --unfreeze 2")
    import datetime as dt

    base = cfg.train.name or f"{source.name}-finetune-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    head_cfg = config.apply_overrides(config.from_dict(cfg.to_dict()), values={
        "train.name": f"{base}-head", **({"train.epochs": head_epochs} if head_epochs else {})})
    say().print(f"[bold]stage 1/2[/]: the new head alone ({head_cfg.train.epochs} epochs)")
    first = run_training(head_cfg, console=say())
    groups = ft.stages(source.model, {ft.classifier_layer(source.model).name})
    frozen = max(0, len(groups) - unfreeze)
    second = config.apply_overrides(config.from_dict(cfg.to_dict()), values={
        "train.name": base, "finetune.from_run": str(first.run_dir), "finetune.backbone": "",
        "finetune.keep_head": True, "finetune.freeze": f"partial:{frozen}"})
    say().print(f"[bold]stage 2/2[/]: the top {len(groups) - frozen} stage(s) "
                    f"({', '.join(n for n, _ in groups[frozen:])}) with the head, body at lr x "
                    f"{second.finetune.body_lr_scale}")
    run_training(second, console=say())


def _adopt_source(cfg, source) -> None:
    """The run trains the source's architecture at the source's input size."""
    from cnnctl.models import model_input_shape

    cfg.model.name = source.name
    cfg.model.options = {"input_shape": list(model_input_shape(source.model))}
