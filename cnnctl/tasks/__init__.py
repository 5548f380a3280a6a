"""Tasks: what a model is trained to do. ``base.Task`` is the engine's one plug-in point; each
family registers one (``classify``, ``caption``, ``generate``, ``segment``, ``detect``)."""

from cnnctl.tasks.base import TASKS, Field, Task, build_model, get, model_input_shape

__all__ = ["TASKS", "Field", "Task", "build_model", "get", "model_input_shape"]
