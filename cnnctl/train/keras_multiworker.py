"""Two mends that let Keras 3's ``fit`` run under MultiWorkerMirroredStrategy (keras#20585, open).

Keras 3.15 on TensorFlow fails before the first multi-worker step, in two places:

1. ``Trainer._maybe_symbolic_build`` takes one distributed batch to build the model's
   metrics and averages it with ``strategy.reduce("MEAN", batch, axis=None)``; under
   MultiWorkerMirroredStrategy that all-reduce gets the (x, y) tuple and stops with
   "Attempt to convert a value (PerReplica ...) to a Tensor". The build only needs
   shapes, so this takes the first local replica's batch instead.
2. ``reduce_per_replica(..., "mean")`` averages the step's logs (scalar losses and
   metrics) with ``strategy.reduce("MEAN", v, axis=0)``, and a scalar has no axis 0
   ("Invalid reduction dimension 0"). This averages across replicas (``axis=None``),
   as the one-worker path (``tf.reduce_mean`` over the replicas' values) does.

Both are applied only when cnnctl makes a MultiWorkerMirroredStrategy, and
only if the Keras internals are the ones described (else Keras is left as it is
and the tests of the multi-worker path say so).
"""

from __future__ import annotations

_APPLIED = False


def apply() -> bool:
    """Patch Keras' TensorFlow trainer once; True if the patches are in place."""
    global _APPLIED
    if _APPLIED:
        return True
    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer
    except ImportError:
        return False
    if not (hasattr(trainer, "reduce_per_replica") and hasattr(trainer, "_collective_all_reduce_multi_worker")
            and hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build")):
        return False
    import tensorflow as tf

    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and trainer._collective_all_reduce_multi_worker(strategy):
            for _, _, it in iterator:  # as Keras does: one batch of the epoch's fresh iterator
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
            iterator = None
        return symbolic_build(self, iterator=iterator, data_batch=data_batch)

    reduce_per_replica = trainer.reduce_per_replica

    def _reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica
    _APPLIED = True
    return True
