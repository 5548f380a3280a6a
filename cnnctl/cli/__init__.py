"""The ``cnnctl`` command line (Typer). Commands import TensorFlow lazily, so ``--help`` is instant."""

from __future__ import annotations

import typer

from cnnctl.cli import caption as caption_cmd
from cnnctl.cli import data as data_cmd
from cnnctl.cli import detect as detect_cmd
from cnnctl.cli import evaluate as evaluate_cmd
from cnnctl.cli import export as export_cmd
from cnnctl.cli import finetune as finetune_cmd
from cnnctl.cli import generate as generate_cmd
from cnnctl.cli import launch as launch_cmd
from cnnctl.cli import models as models_cmd
from cnnctl.cli import predict as predict_cmd
from cnnctl.cli import segment as segment_cmd
from cnnctl.cli import train as train_cmd
from cnnctl.cli import visualize as visualize_cmd

app = typer.Typer(
    name="cnnctl",
    help="Train, evaluate and run the landmark convolutional networks on your own images.\n\n"
         "Start with `cnnctl train` (Fashion-MNIST, bundled) and `cnnctl models`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
app.command("train")(train_cmd.train)
app.command("finetune")(finetune_cmd.finetune)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("predict")(predict_cmd.predict)
app.command("models")(models_cmd.models)
app.command("caption")(caption_cmd.caption)
app.command("generate")(generate_cmd.generate)
app.command("segment")(segment_cmd.segment)
app.command("detect")(detect_cmd.detect)
app.command("export")(export_cmd.export)
app.command("launch", context_settings={"allow_interspersed_args": False})(launch_cmd.launch)
app.add_typer(data_cmd.app, name="data")
app.add_typer(visualize_cmd.app, name="visualize")


def main() -> None:
    app()
