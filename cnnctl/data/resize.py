"""Evaluation-size rules shared by the pipeline and the inference commands (no TensorFlow here)."""

from __future__ import annotations


def eval_short_side(data_cfg) -> int:
    """The shorter side a run's evaluation resizes to (0: the whole image to the model's size)."""
    rs = data_cfg.resize_short
    return int(data_cfg.eval_resize_short or (round(sum(rs) / len(rs)) if rs else 0))
