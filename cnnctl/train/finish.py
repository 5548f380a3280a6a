"""The end of every training path (the engine's fit, kNN memorisation, finetune's head on cached
features): one ``finish_run`` writes the history, the curves, ``metrics.json`` and the task's
outputs, and prints the results table, so every run directory ends the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def finish_run(run, task, console, data, history: list[dict], metrics: dict, curves_title: str) -> RunResult:
    """history.csv, curves.png (the task's progress fields), metrics.json, the task's outputs, the table."""
    from cnnctl.train.report import results_table
    from cnnctl.viz import plots

    run.write_history(history)
    if history:
        plots.curves(history, run.file("curves.png"), title=curves_title,
                     keys=tuple(f.key for f in task.progress_fields))
    run.write_json("metrics.json", metrics)
    task.write_outputs(run, data)
    results_table(console, task, metrics, run.path)
    return RunResult(run.path, metrics, history)
