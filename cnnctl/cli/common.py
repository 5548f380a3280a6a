"""What every command shares: quiet TensorFlow, one console, user errors without tracebacks."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import typer

from cnnctl.errors import CnnctlError

# What TensorFlow raises in a worker whose peer died in the middle of an all-reduce.
_LOST_PEER_ERRORS = {"UnavailableError", "CancelledError", "DeadlineExceededError", "AbortedError"}


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    if os.environ.get("CNNCTL_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        return
    # TensorFlow 2.21 logs oneDNN/CUDA notices through absl before TF_CPP_MIN_LOG_LEVEL applies;
    # they go straight to file descriptor 2, so silence that descriptor while TF starts.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def report_errors(fn: Callable) -> Callable:
    """Run a command; turn user errors into one red message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err = console(stderr=True)
        try:
            return fn(*args, **kwargs)
        except CnnctlError as e:
            from rich.markup import escape  # paths may contain [brackets]

            err.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
            if e.hint:
                err.print(f"[yellow]fix:[/] {escape(e.hint)}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted.[/] Checkpoints written so far are intact; "
                      "continue a training run with `cnnctl train --resume RUN_DIR`.")
            raise typer.Exit(130) from None
        except MemoryError:
            err.print("[bold red]error:[/] out of memory",)
            err.print("[yellow]fix:[/] lower --batch-size, or set data.cache=false to stream images from disk")
            raise typer.Exit(3) from None
        except Exception as e:
            name = type(e).__name__
            if name in _LOST_PEER_ERRORS and (os.environ.get("TF_CONFIG") or os.environ.get("SLURM_PROCID")):
                # a collective op of MultiWorkerMirroredStrategy failed: another worker died or hung up
                import re

                text = str(e)
                dead = re.findall(r"unhealthy[^/]*(/job:\w+/replica:\d+/task:\d+)", text, flags=re.DOTALL)
                what = (f"worker {dead[0]} stopped sending heartbeats" if dead
                        else f"{name}: {text.splitlines()[0][:200]}")
                err.print(f"[bold red]error:[/] lost contact with another worker ({what})", soft_wrap=True)
                err.print("[yellow]fix:[/] stop every worker, then start them all again with "
                          "`cnnctl train --resume RUN_DIR` (the last checkpoint is intact)", soft_wrap=True)
                raise typer.Exit(5) from None
            if name == "ResourceExhaustedError":
                err.print(f"[bold red]error:[/] out of memory in TensorFlow: {str(e).splitlines()[0]}")
                err.print("[yellow]fix:[/] lower --batch-size or use a smaller input size")
                raise typer.Exit(3) from None
            if isinstance(e, OSError) and e.errno in (28, 27, 122):  # ENOSPC, EFBIG, EDQUOT
                from rich.markup import escape

                err.print(f"[bold red]error:[/] could not write: {escape(str(e))}")
                err.print("[yellow]fix:[/] free disk space, then resume; the last checkpoint is intact")
                raise typer.Exit(4) from None
            raise

    return wrapper


def echo_json(obj) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
