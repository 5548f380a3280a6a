"""The architecture registry (no Keras import here, so listing names is cheap)."""

from cnnctl.registry import Registry

MODELS = Registry("model")
register = MODELS.register
