"""Tasks: what a model is trained to do. ``base.Task`` is the engine's one plug-in point; each
family registers one (``classify``; captioning, GANs, segmentation and detection to come)."""

from cnnctl.tasks.base import TASKS, Field, Task, get

__all__ = ["TASKS", "Field", "Task", "get"]
