"""The ``cnnctl`` command line (Typer). Commands import TensorFlow lazily, so ``--help`` is instant."""

from __future__ import annotations

import os
import sys

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


# Commands that, once their output is written, end with os._exit instead of Python's teardown of
# TensorFlow, which takes about 0.8 s here (`python -c "import tensorflow"`: 4.52 s, 3.72 s of it
# without the teardown; benchmarks/cold_start.py). Each of them writes its files whole and closed (PIL's save,
# cnnctl.files' atomic writes) and keeps no writer open (TensorBoard, checkpoints), so nothing is lost.
FAST_EXIT_COMMANDS = ("predict", "caption", "segment", "detect")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in FAST_EXIT_COMMANDS:
        app()
        return
    try:
        app()
        code = 0
    except SystemExit as e:                 # click ends every command with one, 0 on success
        code = e.code
    _exit_now(code)


def _exit_now(code) -> None:
    """Flush what was printed and end the process with ``code``, without Python's teardown once
    TensorFlow is loaded (a command refused before it was imported exits as usual)."""
    if code is None:
        code = 0
    elif not isinstance(code, int):         # SystemExit("message")
        print(code, file=sys.stderr)
        code = 1
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
