"""Training with auxiliary classifiers (GoogLeNet, Inception-v3).

Szegedy et al. 2015, section 5: auxiliary classifiers on intermediate layers
"during training, their loss gets added to the total loss of the network
with a discount weight (the losses of the auxiliary classifiers were
weighted by 0.3). At inference time, these auxiliary networks are
discarded."
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="cnnctl")
class AuxiliaryClassifiers(keras.Model):
    """A network with outputs ``[main, aux_1, ..., aux_n]`` that predicts with ``main`` alone.

    ``model(x)`` returns the main logits (so evaluation, prediction and
    metrics see one output); in a training step the auxiliary logits of that
    same forward pass add ``aux_weight * cross-entropy`` each to the loss.

    Args:
        network: a functional model with one main and n auxiliary logits outputs.
        aux_weight: the discount weight of each auxiliary loss (0.3 in GoogLeNet).
    """

    def __init__(self, network: keras.Model, aux_weight: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.aux_weight = float(aux_weight)
        self._aux_logits = None

    @property
    def input_shape_hwc(self):
        return tuple(self.network.inputs[0].shape[1:])

    def call(self, x, training=False):
        main, *aux = self.network(x, training=training)
        # Kept for compute_loss of the same training step (same trace, same replica).
        self._aux_logits = aux if training else None
        return main

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if training and self._aux_logits:
            for logits in self._aux_logits:
                aux = keras.losses.categorical_crossentropy(y, keras.ops.cast(logits, "float32"), from_logits=True)
                loss = loss + self.aux_weight * keras.ops.mean(aux)
        return loss

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "aux_weight": self.aux_weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network=network, **config)
