"""A 2-replica MirroredStrategy step equals the single-device step on the same batch."""

import numpy as np


def test_two_replica_step_matches_single_device():
    import keras
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.tasks import classify

    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest splits the CPU in two"
    x = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 1)).astype("float32")
    y = keras.ops.one_hot(np.arange(16) % 10, 10)

    def one_step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = models.build("lenet5", num_classes=10)  # no batch norm: replicas see the same maths
            classify.compile_model(model, keras.optimizers.SGD(0.1, momentum=0.9), 10)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        model.fit(ds, epochs=1, verbose=0)
        return [v.numpy() for v in model.trainable_variables]

    from cnnctl.train.runtime import pick_strategy

    single = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    # The process's one MirroredStrategy (a second instance would reuse collective keys).
    mirrored_strategy = pick_strategy("mirrored")
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = one_step(mirrored_strategy)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And the step did change the weights (the comparison is not of two untouched models).
    keras.utils.set_random_seed(0)
    initial = models.build("lenet5", num_classes=10).trainable_variables[0].numpy()
    assert np.abs(initial - single[0]).max() > 1e-4


def test_a_gan_trains_under_two_replicas_with_its_own_noise_per_replica():
    """Both optimizers step, the critic stays clipped, and the replicas draw different noise."""
    import keras
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.train.runtime import pick_strategy

    strategy = pick_strategy("mirrored")
    with strategy.scope():
        gan = models.build("wgan", num_classes=0, width=8, n_critic=2)
        gan.compile(optimizer=keras.optimizers.RMSprop(5e-5), d_optimizer=keras.optimizers.RMSprop(5e-5))
    x = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    y = np.eye(10, dtype="float32")[np.arange(16) % 10]
    gan.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    steps = [int(keras.ops.convert_to_numpy(o.iterations)) for o in (gan.optimizer, gan.d_optimizer)]
    assert steps == [1, 2]
    critic = np.concatenate([w.numpy().ravel() for w in gan.discriminator.trainable_weights])
    assert np.isfinite(critic).all() and np.abs(critic).max() <= 0.01 + 1e-7

    @tf.function
    def draw():
        return strategy.run(lambda: gan.sample_noise(3))

    per_replica = strategy.experimental_local_results(draw())
    assert len(per_replica) == 2 and not np.allclose(per_replica[0].numpy(), per_replica[1].numpy())


def test_evaluation_batches_are_cut_so_every_replica_gets_examples():
    """Every (examples, batch, replicas): the same examples in the same order (or the whole split
    repeated ``replicas`` times when it is too small), every batch reaching every replica, and the
    first batch dividing evenly (Keras builds the model from its per-replica mean)."""
    import tensorflow as tf

    from cnnctl.data.pipeline import no_empty_replica, splits_without_empty_replica

    for replicas in (2, 3, 4):
        for batch in (replicas, 2 * replicas, 4 * replicas):
            for n in range(1, 2 * batch + 2):
                ds = tf.data.Dataset.range(n).batch(batch)
                got = [b.numpy() for b in no_empty_replica(ds, replicas)]
                flat = np.concatenate(got)
                assert list(flat) == list(range(n)) or list(flat) == list(range(n)) * replicas, (n, batch, replicas)
                assert all(splits_without_empty_replica(len(b), replicas) for b in got), (n, batch, replicas)
                assert len(got[0]) % replicas == 0, (n, batch, replicas)
    # the rule itself: 5 on 4 replicas is 2, 2, 1, 0; 7 is 2, 2, 2, 1
    assert not splits_without_empty_replica(5, 4) and splits_without_empty_replica(7, 4)
    assert not splits_without_empty_replica(1, 2) and splits_without_empty_replica(3, 2)


def test_two_replicas_evaluate_a_short_split_as_one_device_does():
    """Batch norm after a widening convolution, evaluated on 3 examples (one short first batch) and
    on 9 (a last batch of 1): the 2-replica loss and accuracy are those of one device."""
    import keras
    import tensorflow as tf

    from cnnctl.data.pipeline import no_empty_replica
    from cnnctl.train.runtime import pick_strategy

    def evaluate(strategy, n):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, padding="same"),
                                      keras.layers.Conv2D(16, 3, padding="same"), keras.layers.BatchNormalization(),
                                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        rng = np.random.default_rng(n)
        ds = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 1, (n, 12, 12, 3)).astype("float32"),
                                                 np.arange(n) % 3)).batch(8)
        return model.evaluate(no_empty_replica(ds, strategy.num_replicas_in_sync), verbose=0, return_dict=True)

    mirrored = pick_strategy("mirrored")
    for n in (3, 9):
        one, two = evaluate(tf.distribute.OneDeviceStrategy("/cpu:0"), n), evaluate(mirrored, n)
        assert abs(one["loss"] - two["loss"]) < 1e-5 and one["accuracy"] == two["accuracy"], (n, one, two)
