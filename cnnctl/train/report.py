"""What every training path prints when it ends (fit, memorise, stored features)."""

from __future__ import annotations

from pathlib import Path


def results_table(console, task, metrics: dict, path: Path) -> None:
    """The results table at the end of every run: the task's keys first, then time and size."""
    from rich.table import Table

    table = Table(title="results", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (*task.summary_keys(), "params", "train_images_per_s", "train_time_s", "wall_time_s",
                "precision", "best_epoch"):
        if metrics.get(key) is not None:
            v = metrics[key]
            table.add_row(key, f"{v:.4f}" if isinstance(v, float) and v < 10 else
                          f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)
    console.print(f"run directory: {path}", soft_wrap=True, markup=False)
