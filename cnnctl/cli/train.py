"""``cnnctl train``: train a recipe (default: Fashion-MNIST, bundled) into a run directory."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from cnnctl.cli.common import console, quiet_tensorflow, report_errors


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class Cluster(str, Enum):
    tf_config = "tf_config"
    slurm = "slurm"


class Strategy(str, Enum):
    auto = "auto"
    default = "default"
    mirrored = "mirrored"
    multiworker = "multiworker"


@report_errors
def train(
    recipe: str | None = typer.Argument(None, help="Recipe TOML (a path, or a name in pipelines/). Default: pipelines/default.toml."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a recipe key: --set train.epochs=30 (repeatable)."),
    data: str | None = typer.Option(None, "--data", "-d", help="Data: class folder, CSV of path,label, TFRecord folder, mnist.npz, CIFAR-10 batches."),
    model: str | None = typer.Option(None, "--model", "-m", help="Architecture name (see `cnnctl models`)."),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="Number of epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Global batch size (split across replicas)."),
    name: str | None = typer.Option(None, "--name", help="Run directory name under checkpoints/."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for initialisation, data split, order and augmentation."),
    precision: Precision | None = typer.Option(None, "--precision", help="Numeric precision; auto picks mixed_bfloat16 on CPUs with bf16 units (float32 for models measured slower in bf16)."),
    jit: bool | None = typer.Option(None, "--jit/--no-jit", help="Compile the train step with XLA."),
    deterministic: bool | None = typer.Option(None, "--deterministic", help="Deterministic ops and data order (bit-reproducible on CPU)."),
    strategy: Strategy | None = typer.Option(None, "--strategy", help="Distribution strategy."),
    cluster: Cluster | None = typer.Option(None, "--cluster", help="Where a multi-worker job's layout comes from: TF_CONFIG, or Slurm's variables under srun."),
    devices: int | None = typer.Option(None, "--devices", help="Split the CPU into N logical devices (MirroredStrategy on one CPU)."),
    clipnorm: float | None = typer.Option(None, "--clipnorm", help="Clip the global gradient norm to this value."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Also write a resume backup every N steps."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable image files instead of stopping."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Parent folder of run directories (default: checkpoints)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
):
    """Train a network; everything lands in `checkpoints/RUN_NAME/`.

    Examples:

        cnnctl train                                   # Fashion-MNIST, default recipe, ~2 min on a laptop CPU

        cnnctl train resnet20-fashion --epochs 30

        cnnctl train --data my_photos/ --model resnet20 --set model.input_shape=[64,64,3]

        cnnctl train --devices 2 --strategy mirrored   # two replicas on one CPU

        cnnctl train --resume checkpoints/fashion_cnn-fashion_mnist-20261123-120000
    """
    quiet_tensorflow()
    from cnnctl import config

    values = {
        "data.path": data, "model.name": model, "train.epochs": epochs, "train.batch_size": batch_size,
        "train.name": name, "train.seed": seed, "train.precision": precision.value if precision else None,
        "train.jit": jit, "train.deterministic": deterministic,
        "train.strategy": strategy.value if strategy else None, "train.devices": devices,
        "train.cluster": cluster.value if cluster else None,
        "optimizer.clipnorm": clipnorm, "train.checkpoint_every": checkpoint_every,
        "data.skip_bad": True if skip_bad else None, "train.out_dir": str(out_dir) if out_dir else None,
    }
    values = {k: v for k, v in values.items() if v is not None}
    if data is not None:
        values["data.source"] = "auto"
    if resume is not None:
        if recipe is not None:
            from cnnctl.errors import CnnctlError

            raise CnnctlError("give either a recipe or --resume, not both",
                              hint="a resumed run uses the recipe saved in its directory (change keys with --set)")
        cfg = config.apply_overrides(config.load_run_config(resume), set_, values)
    else:
        cfg = config.load(recipe, set_, values)
    from cnnctl.train.engine import train as run_training

    run_training(cfg, resume=resume, console=console())
