"""Generative adversarial networks: the 2014 MLP GAN, the conditional GAN, DCGAN, WGAN and WGAN-GP.

A registered GAN builder returns a ``GAN``: a generator ``G`` and a discriminator (a critic for the
WGANs) ``D`` with the paper's losses in its ``train_step``. Conventions:

- ``G([z, y]) -> images`` in ``G.output_range``: ``"unit"`` ([0, 1], the MLP papers' sigmoid) or
  ``"tanh"`` ([-1, 1], DCGAN and after). ``z`` is ``(b, noise_dim)``; ``y`` is a one-hot label
  ``(b, classes)`` on conditional models and absent otherwise.
- ``D([x, y]) -> (b, 1)`` logits (critic values for the WGANs), for images in the same range.
- ``train_step`` takes the classification pipeline's batches unchanged: raw pixels in [0, 255] and
  one-hot labels. It scales the pixels into G's range itself.
- ``train.batch_size`` counts the real images of one generator update: with ``d_steps = k`` they are
  split into k minibatches, one discriminator update each, then G is updated once (Goodfellow et
  al. 2014, Algorithm 1; Arjovsky et al. 2017, Algorithm 1, n_critic). A fixed, unrolled k keeps
  the step free of data-dependent control flow, so it runs the same under every tf.distribute
  strategy and resumes exactly.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from cnnctl.layers import (
    FusedBatchNormalization,
    StrideTwoConv2D,
    StrideTwoConv2DTranspose,
)
from cnnctl.models.registry import register

LOSSES = ("nonsaturating", "minimax", "wasserstein", "wasserstein_gp")


# ----------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="cnnctl")
class Maxout(layers.Layer):
    """``units`` maxout units of ``pieces`` linear pieces each (Goodfellow et al. 2013): the max over
    ``pieces`` affine maps. ``(b, d) -> (b, units)``."""

    def __init__(self, units: int, pieces: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units, self.pieces = units, pieces
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.linear = layers.Dense(self.units * self.pieces, kernel_initializer=self.kernel_initializer,
                                   dtype=self.dtype_policy, name="linear")
        self.linear.build(input_shape)

    def call(self, x):
        h = self.linear(x)                                                    # (b, units * pieces)
        return ops.max(ops.reshape(h, (-1, self.units, self.pieces)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def _image_inputs(shape, classes: int):
    x = keras.Input(shape, name="image")
    y = keras.Input((classes,), name="label") if classes else None
    return x, y


def _noise_inputs(noise_dim: int, classes: int):
    z = keras.Input((noise_dim,), name="noise")
    y = keras.Input((classes,), name="label") if classes else None
    return z, y


def _model(inputs, output, name):
    inputs = [i for i in inputs if i is not None]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], output, name=name)


# ----------------------------------------------------------------------------- the MLP GANs
def _mlp_generator(shape, noise_dim, classes, z_units, y_units, hidden, dropout, init):
    """z (and y) -> ReLU layers -> sigmoid pixels in [0, 1]."""
    z, y = _noise_inputs(noise_dim, classes)
    h = layers.Dense(z_units, activation="relu", kernel_initializer=init, name="z_hidden")(z)
    if y is not None:
        hy = layers.Dense(y_units, activation="relu", kernel_initializer=init, name="y_hidden")(y)
        h = layers.Concatenate(name="joint")([layers.Dropout(dropout, name="z_dropout")(h),
                                             layers.Dropout(dropout, name="y_dropout")(hy)])
    for i, units in enumerate(hidden):
        h = layers.Dense(units, activation="relu", kernel_initializer=init, name=f"hidden{i + 1}")(h)
        if dropout:
            h = layers.Dropout(dropout, name=f"dropout{i + 1}")(h)
    pixels = layers.Dense(math.prod(shape), activation="sigmoid", kernel_initializer=init, dtype="float32",
                          name="pixels")(h)
    return _model([z, y], layers.Reshape(shape, dtype="float32", name="image")(pixels), "generator")


def _maxout_discriminator(shape, classes, x_units, y_units, joint, pieces, dropout, input_dropout, init):
    """x (and y) -> maxout layers with dropout -> one logit."""
    x, y = _image_inputs(shape, classes)
    h = layers.Flatten(name="flat")(x)
    h = layers.Dropout(input_dropout, name="input_dropout")(h)
    h = Maxout(x_units, pieces[0], kernel_initializer=init, name="x_maxout")(h)
    h = layers.Dropout(dropout, name="x_dropout")(h)
    if y is not None:
        hy = Maxout(y_units, pieces[0], kernel_initializer=init, name="y_maxout")(y)
        hy = layers.Dropout(dropout, name="y_dropout")(hy)
        h = layers.Concatenate(name="joint")([h, hy])
    h = Maxout(joint, pieces[1], kernel_initializer=init, name="joint_maxout")(h)
    h = layers.Dropout(dropout, name="joint_dropout")(h)
    logit = layers.Dense(1, kernel_initializer=init, dtype="float32", name="logit")(h)
    return _model([x, y], logit, "discriminator")


@register("gan_mlp", task="generate", input_shape=(28, 28, 1), num_classes=0,
          paper="Goodfellow et al., Generative Adversarial Nets (NeurIPS 2014), Algorithm 1, sec. 3 and 5",
          reported_error="MNIST Parzen log-likelihood 225 +- 2 (Table 1)")
def gan_mlp(num_classes: int = 0, input_shape=(28, 28, 1), noise_dim: int = 100, hidden: int = 1200,
            maxout_units: int = 240, pieces: int = 5, d_steps: int = 1, loss: str = "nonsaturating",
            instance_noise: float = 0.0, noise_anneal: float = 0.5):
    """The 2014 paper's MLPs.

    - G: "a mixture of rectifier linear activations and sigmoid activations" (sec. 5): z (100,
      uniform) -> 1200 ReLU -> 1200 ReLU -> 784 sigmoid, the sizes of the paper's released MNIST
      configuration.
    - D: maxout units with dropout (sec. 5): 240 units x 5 pieces, twice, then a sigmoid unit;
      dropout 0.2 on the input and 0.5 after each maxout layer.
    - ``d_steps`` is Algorithm 1's k (the paper used k = 1). ``loss = "nonsaturating"`` trains G to
      maximise log D(G(z)) (sec. 3: "this objective function results in the same fixed point ... but
      provides much stronger gradients early in learning"); ``"minimax"`` is the value function as
      written, G minimising log(1 - D(G(z))).
    - Training: SGD with momentum (recipe ``gan-fashion``: lr 0.1, momentum 0.5, batch 100).
    """
    init = keras.initializers.RandomUniform(-0.05, 0.05)
    g = _mlp_generator(input_shape, noise_dim, 0, hidden, 0, [hidden], 0.0, init)
    d = _maxout_discriminator(input_shape, 0, maxout_units, 0, maxout_units, (pieces, pieces), 0.5, 0.2,
                              keras.initializers.RandomUniform(-0.005, 0.005))
    return GAN(g, d, noise_dim, 0, loss=_check_loss(loss, ("nonsaturating", "minimax")), d_steps=d_steps,
               output_range="unit", noise="uniform", instance_noise=instance_noise, noise_anneal=noise_anneal,
               name="gan_mlp")


@register("cgan_mlp", task="generate", input_shape=(28, 28, 1), num_classes=10,
          paper="Mirza & Osindero, Conditional Generative Adversarial Nets (2014), sec. 4.1",
          reported_error="MNIST Parzen log-likelihood 132 +- 1.8 (Table 1)")
def cgan_mlp(num_classes: int = 10, input_shape=(28, 28, 1), noise_dim: int = 100, d_steps: int = 1,
             loss: str = "nonsaturating", dropout: float = 0.5, instance_noise: float = 0.0,
             noise_anneal: float = 0.5):
    """The label goes into both networks (sec. 4.1, MNIST).

    - G: z (100, uniform on the unit hypercube) -> 200 ReLU and the one-hot y -> 1000 ReLU, joined
      into 1200 ReLU, then 784 sigmoid units.
    - D: x -> maxout 240 units x 5 pieces, y -> maxout 50 units x 5 pieces, joined into maxout 240
      units x 4 pieces, then a sigmoid unit.
    - Dropout 0.5 in both networks; SGD, batch 100, lr 0.1 decaying to 1e-6, momentum 0.5 -> 0.7
      (recipe ``cgan-fashion``).
    """
    init = keras.initializers.RandomUniform(-0.05, 0.05)
    g = _mlp_generator(input_shape, noise_dim, num_classes, 200, 1000, [1200], dropout, init)
    d = _maxout_discriminator(input_shape, num_classes, 240, 50, 240, (5, 4), dropout, dropout,
                              keras.initializers.RandomUniform(-0.005, 0.005))
    return GAN(g, d, noise_dim, num_classes, loss=_check_loss(loss, ("nonsaturating", "minimax")),
               d_steps=d_steps, output_range="unit", noise="unit_uniform", instance_noise=instance_noise,
               noise_anneal=noise_anneal, name="cgan_mlp")


# ----------------------------------------------------------------------------- DCGAN and the WGANs
def _dc_plan(shape) -> tuple[int, int]:
    """-> (the first feature map's side, the number of stride-2 up/down-samplings) for 28, 32 or 64 px."""
    side = shape[0]
    if shape[0] != shape[1] or side not in (28, 32, 64):
        raise ValueError(f"DCGAN builds 28x28, 32x32 or 64x64 images, not {shape[0]}x{shape[1]}")
    return (7, 2) if side == 28 else (4, {32: 3, 64: 4}[side])


def _dc_generator(shape, noise_dim, classes, width, init):
    """z (+ y) -> project to a 4x4 (7x7) map -> fractionally-strided 4x4 convolutions halving the
    channels -> tanh image. BN and ReLU everywhere but the output (Radford et al. sec. 3)."""
    start, ups = _dc_plan(shape)
    z, y = _noise_inputs(noise_dim, classes)
    h = z if y is None else layers.Concatenate(name="noise_and_label")([z, y])
    channels = width * 2 ** (ups - 1)
    h = layers.Dense(start * start * channels, use_bias=False, kernel_initializer=init, name="project")(h)
    h = layers.Reshape((start, start, channels), name="project_map")(h)
    h = FusedBatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), name="project_bn")(h)
    h = layers.ReLU(name="project_relu")(h)
    for i in range(ups - 1):
        channels //= 2
        h = StrideTwoConv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init,
                                   name=f"up{i + 1}")(h)
        h = FusedBatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
                                      name=f"up{i + 1}_bn")(h)
        h = layers.ReLU(name=f"up{i + 1}_relu")(h)
    h = StrideTwoConv2DTranspose(shape[-1], 4, strides=2, padding="same", kernel_initializer=init, name="to_image")(h)
    image = layers.Activation("tanh", dtype="float32", name="image")(h)
    return _model([z, y], image, "generator")


def _dc_discriminator(shape, classes, width, init, norm: str):
    """image (+ y as constant feature maps) -> strided 4x4 convolutions doubling the channels,
    LeakyReLU 0.2, no pooling -> one logit. ``norm``: "batch" (DCGAN, WGAN), "layer" (WGAN-GP's
    critic, whose gradient penalty is per example, so batch statistics must not mix examples) or ""."""
    _, downs = _dc_plan(shape)
    x, y = _image_inputs(shape, classes)
    h = x
    if y is not None:
        maps = layers.Reshape((1, 1, classes), name="label_map")(y)
        maps = layers.UpSampling2D(size=shape[:2], name="label_planes")(maps)     # (b, H, W, classes)
        h = layers.Concatenate(name="image_and_label")([h, maps])
    channels = width
    for i in range(downs):
        h = StrideTwoConv2D(channels, 4, strides=2, padding="same", use_bias=i == 0 or not norm,
                          kernel_initializer=init, name=f"down{i + 1}")(h)
        if i > 0 and norm == "batch":      # not on D's input layer (sec. 3)
            h = FusedBatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
                                          name=f"down{i + 1}_bn")(h)
        elif i > 0 and norm == "layer":
            h = layers.LayerNormalization(axis=[1, 2, 3], name=f"down{i + 1}_ln")(h)
        h = layers.LeakyReLU(0.2, name=f"down{i + 1}_lrelu")(h)
        channels *= 2
    h = layers.Flatten(name="flat")(h)
    logit = layers.Dense(1, kernel_initializer=init, dtype="float32", name="logit")(h)
    return _model([x, y], logit, "discriminator")


@register("dcgan", task="generate", input_shape=(28, 28, 1), num_classes=0,
          paper="Radford, Metz & Chintala, Unsupervised Representation Learning with Deep Convolutional "
                "GANs (ICLR 2016), sec. 3 and 4")
def dcgan(num_classes: int = 0, input_shape=(28, 28, 1), noise_dim: int = 100, width: int = 64,
          d_steps: int = 1, loss: str = "nonsaturating", instance_noise: float = 0.0, noise_anneal: float = 0.5, conditional: bool = False):
    """The paper's architecture guidelines (sec. 3) at 28, 32 or 64 px, any number of channels.

    - Strided convolutions in D, fractionally-strided convolutions in G, no pooling, no hidden
      fully connected layers (G's first layer is a projection reshaped to a map, as in Fig. 1).
    - Batch norm in both networks except G's output layer and D's input layer.
    - ReLU in G with a tanh output; LeakyReLU with slope 0.2 in D (sec. 4).
    - Weights from N(0, 0.02); Adam lr 2e-4, beta1 0.5; batch 128 (sec. 4, recipe ``dcgan-fashion``).
    - ``conditional = true`` (conditional DCGAN): the one-hot label joins z, and D sees it as
      constant feature maps beside the image.
    """
    init = keras.initializers.RandomNormal(0.0, 0.02)
    num_classes = num_classes if conditional else 0
    g = _dc_generator(input_shape, noise_dim, num_classes, width, init)
    d = _dc_discriminator(input_shape, num_classes, width, init, "batch")
    return GAN(g, d, noise_dim, num_classes, loss=_check_loss(loss, ("nonsaturating", "minimax")),
               d_steps=d_steps, output_range="tanh", instance_noise=instance_noise, noise_anneal=noise_anneal,
               name="dcgan")


@register("wgan", task="generate", input_shape=(28, 28, 1), num_classes=0,
          paper="Arjovsky, Chintala & Bottou, Wasserstein GAN (ICML 2017), Algorithm 1")
def wgan(num_classes: int = 0, input_shape=(28, 28, 1), noise_dim: int = 100, width: int = 64,
         n_critic: int = 5, clip: float = 0.01, conditional: bool = False):
    """Algorithm 1: the DCGAN networks, D a critic with no sigmoid whose weights are clipped to
    [-c, c] after every update (c = 0.01), n_critic = 5 critic updates per generator update,
    RMSProp with lr 5e-5 and batch m = 64 (recipe ``wgan-fashion``: train.batch_size = 5 x 64).
    The critic's ``E[D(x)] - E[D(G(z))]`` is the estimate of the Wasserstein distance (``w_dist``)."""
    init = keras.initializers.RandomNormal(0.0, 0.02)
    num_classes = num_classes if conditional else 0
    g = _dc_generator(input_shape, noise_dim, num_classes, width, init)
    d = _dc_discriminator(input_shape, num_classes, width, init, "batch")
    return GAN(g, d, noise_dim, num_classes, loss="wasserstein", d_steps=n_critic, clip=clip,
               output_range="tanh", name="wgan")


@register("wgan_gp", task="generate", input_shape=(28, 28, 1), num_classes=0,
          paper="Gulrajani et al., Improved Training of Wasserstein GANs (NeurIPS 2017), Algorithm 1 and sec. 4")
def wgan_gp(num_classes: int = 0, input_shape=(28, 28, 1), noise_dim: int = 100, width: int = 64,
            n_critic: int = 5, gp_weight: float = 10.0, conditional: bool = False):
    """Algorithm 1: no clipping; the penalty ``lambda (||grad D(x_hat)||_2 - 1)^2`` at random points
    ``x_hat`` on lines between real and generated images, lambda = 10, n_critic = 5, Adam lr 1e-4
    with betas (0, 0.9) (recipe ``wgan-gp-fashion``). The critic has no batch norm (sec. 4: "No
    critic batch normalization"); layer normalization stands in, as the paper recommends."""
    init = keras.initializers.RandomNormal(0.0, 0.02)
    num_classes = num_classes if conditional else 0
    g = _dc_generator(input_shape, noise_dim, num_classes, width, init)
    d = _dc_discriminator(input_shape, num_classes, width, init, "layer")
    return GAN(g, d, noise_dim, num_classes, loss="wasserstein_gp", d_steps=n_critic, gp_weight=gp_weight,
               output_range="tanh", name="wgan_gp")


def _check_loss(loss: str, allowed: tuple[str, ...]) -> str:
    if loss not in allowed:
        raise ValueError(f"loss must be one of {', '.join(allowed)}, not {loss!r}")
    return loss


# ----------------------------------------------------------------------------- the trainer
@keras.saving.register_keras_serializable(package="cnnctl")
class GAN(keras.Model):
    """G and D with the adversarial train step. ``compile(optimizer=G's, d_optimizer=D's)``.

    Instance noise (Arjovsky & Bottou 2017, sec. 4): Gaussian noise of std ``instance_noise`` (in
    G's pixel units) is added to every image D sees, real and generated, and annealed linearly to 0
    over the first ``noise_anneal`` of training (``total_steps`` generator updates, set by the task).
    """

    def __init__(self, generator, discriminator, noise_dim: int, num_classes: int = 0,
                 loss: str = "nonsaturating", d_steps: int = 1, clip: float = 0.0, gp_weight: float = 0.0,
                 output_range: str = "tanh", noise: str = "normal", instance_noise: float = 0.0,
                 noise_anneal: float = 0.5, total_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
        if d_steps < 1:
            raise ValueError(f"d_steps (n_critic) must be at least 1, not {d_steps}")
        self.generator, self.discriminator = generator, discriminator
        self.noise_dim, self.num_classes = int(noise_dim), int(num_classes)
        self.loss_kind, self.d_steps, self.clip, self.gp_weight = loss, int(d_steps), float(clip), float(gp_weight)
        self.output_range, self.noise = output_range, noise
        self.instance_noise, self.noise_anneal, self.total_steps = float(instance_noise), float(noise_anneal), int(total_steps)
        self.seed_generator = keras.random.SeedGenerator(name="gan_seed")   # from the run's --seed
        self.d_optimizer = None
        self.trackers = {k: keras.metrics.Mean(name=k) for k in self.metric_keys()}
        self.built = True                         # G and D are built functional models

    # ------------------------------------------------------------------ what it reports
    @property
    def wasserstein(self) -> bool:
        return self.loss_kind.startswith("wasserstein")

    def metric_keys(self) -> tuple[str, ...]:
        return ("d_loss", "g_loss") + (("w_dist",) if self.wasserstein else ()) + (
            ("noise_sigma",) if self.instance_noise else ())

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ------------------------------------------------------------------ building and saving
    def compile(self, optimizer, d_optimizer, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.d_optimizer = d_optimizer
        optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    def build(self, input_shape=None):
        self.built = True

    def get_compile_config(self):
        return None        # two optimizers: the task compiles a loaded GAN again when it trains it

    def call(self, inputs, training=False):
        """``[z]`` or ``[z, y]`` -> images (G)."""
        return self.generator(inputs, training=training)

    def get_config(self):
        return {**super().get_config(),
                "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "noise_dim": self.noise_dim, "num_classes": self.num_classes, "loss": self.loss_kind,
                "d_steps": self.d_steps, "clip": self.clip, "gp_weight": self.gp_weight,
                "output_range": self.output_range, "noise": self.noise, "instance_noise": self.instance_noise,
                "noise_anneal": self.noise_anneal, "total_steps": self.total_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        g = keras.saving.deserialize_keras_object(config.pop("generator"))
        d = keras.saving.deserialize_keras_object(config.pop("discriminator"))
        return cls(g, d, **config)

    # ------------------------------------------------------------------ sampling
    def _seed(self):
        """A fresh stateless seed ``(2,)`` from the model's seed generator (its state is in the resume
        backup), offset by the replica's index: under MirroredStrategy every replica draws its own
        noise (a replicated generator alone would give each replica the same draws)."""
        import tensorflow as tf

        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        return seed + tf.constant([0, 1_000_003], tf.int64) * tf.cast(replica, tf.int64)

    def _normal(self, shape):
        import tensorflow as tf

        return tf.random.stateless_normal(shape, self._seed())

    def _uniform(self, shape, low, high):
        import tensorflow as tf

        return tf.random.stateless_uniform(shape, self._seed(), low, high)

    def sample_noise(self, n):
        """``(n, noise_dim)``: N(0, 1) (DCGAN, WGAN), U(-sqrt 3, sqrt 3) (the 2014 paper's unit-variance
        uniform) or U(0, 1) (the cGAN's "unit hypercube")."""
        shape = (n, self.noise_dim)
        if self.noise == "uniform":
            return self._uniform(shape, -math.sqrt(3.0), math.sqrt(3.0))
        if self.noise == "unit_uniform":
            return self._uniform(shape, 0.0, 1.0)
        return self._normal(shape)

    def generator_inputs(self, z, y):
        return [z, y] if self.num_classes else z

    def to_generator_range(self, pixels):
        """Raw pixels [0, 255] -> G's output range."""
        x = ops.cast(pixels, "float32") / 255.0
        return x if self.output_range == "unit" else x * 2.0 - 1.0

    # ------------------------------------------------------------------ training
    def _d(self, x, y, training=True):
        return ops.cast(self.discriminator([x, y] if self.num_classes else x, training=training), "float32")

    def _sigma(self):
        if not self.instance_noise:
            return ops.convert_to_tensor(0.0)
        span = max(1.0, self.noise_anneal * self.total_steps)
        step = ops.cast(self.optimizer.iterations, "float32")
        return self.instance_noise * ops.maximum(0.0, 1.0 - step / span)

    def _noisy(self, x, sigma):
        if not self.instance_noise:
            return x
        return x + sigma * self._normal(ops.shape(x))

    def _d_losses(self, d_real, d_fake):
        if self.wasserstein:
            return ops.mean(d_fake) - ops.mean(d_real)
        bce = keras.losses.binary_crossentropy
        return (ops.mean(bce(ops.ones_like(d_real), d_real, from_logits=True))
                + ops.mean(bce(ops.zeros_like(d_fake), d_fake, from_logits=True)))

    def _g_loss(self, d_fake):
        if self.wasserstein:
            return -ops.mean(d_fake)
        if self.loss_kind == "minimax":          # minimise log(1 - D(G(z))) = -softplus(logit)
            return -ops.mean(ops.softplus(d_fake))
        return ops.mean(keras.losses.binary_crossentropy(ops.ones_like(d_fake), d_fake, from_logits=True))

    def _gradient_penalty(self, real, fake, y):
        import tensorflow as tf

        eps = self._uniform((ops.shape(real)[0], 1, 1, 1), 0.0, 1.0)
        mixed = eps * real + (1.0 - eps) * fake
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            score = self._d(mixed, y)
        grads = tape.gradient(score, mixed)
        norm = ops.sqrt(ops.sum(ops.square(grads), axis=[1, 2, 3]) + 1e-12)
        return ops.mean(ops.square(norm - 1.0))

    def train_step(self, data):
        import tensorflow as tf

        pixels, onehot = data
        real_all = self.to_generator_range(pixels)
        y_all = ops.cast(onehot, "float32") if self.num_classes else None
        batch = ops.shape(real_all)[0]
        # one discriminator minibatch; an epoch's last batch smaller than d_steps reuses its images
        m = ops.maximum(batch // self.d_steps, 1)
        sigma = self._sigma()
        d_loss = w_dist = ops.convert_to_tensor(0.0)
        for k in range(self.d_steps):             # Algorithm 1's inner loop, unrolled
            start = ops.minimum(k * m, batch - m)  # = k * m whenever batch >= d_steps
            real = real_all[start:start + m]
            y = None if y_all is None else y_all[start:start + m]
            z = self.sample_noise(m)
            fake = self.generator(self.generator_inputs(z, y), training=True)
            with tf.GradientTape() as tape:
                d_real = self._d(self._noisy(real, sigma), y)
                d_fake = self._d(self._noisy(fake, sigma), y)
                d_loss = self._d_losses(d_real, d_fake)
                w_dist = -d_loss
                total = d_loss
                if self.loss_kind == "wasserstein_gp":
                    total = d_loss + self.gp_weight * self._gradient_penalty(real, fake, y)
                scaled = self.d_optimizer.scale_loss(total) if hasattr(self.d_optimizer, "scale_loss") else total
            weights = self.discriminator.trainable_variables
            self.d_optimizer.apply(tape.gradient(scaled, weights), weights)
            if self.clip:
                for w in weights:
                    w.assign(ops.clip(w, -self.clip, self.clip))
        y = None if y_all is None else y_all[:m]
        z = self.sample_noise(m)
        with tf.GradientTape() as tape:
            fake = self.generator(self.generator_inputs(z, y), training=True)
            g_loss = self._g_loss(self._d(self._noisy(fake, sigma), y))
            scaled = self.optimizer.scale_loss(g_loss) if hasattr(self.optimizer, "scale_loss") else g_loss
        weights = self.generator.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, weights), weights)
        return self._report(d_loss, g_loss, w_dist, sigma)

    def test_step(self, data):
        """The same losses on held-out images, no updates (``val_d_loss``, ``val_g_loss``)."""
        pixels, onehot = data
        real = self.to_generator_range(pixels)
        y = ops.cast(onehot, "float32") if self.num_classes else None
        z = self.sample_noise(ops.shape(real)[0])
        fake = self.generator(self.generator_inputs(z, y), training=False)
        d_real, d_fake = self._d(real, y, training=False), self._d(fake, y, training=False)
        d_loss = self._d_losses(d_real, d_fake)
        return self._report(d_loss, self._g_loss(d_fake), -d_loss, self._sigma())

    def _report(self, d_loss, g_loss, w_dist, sigma):
        values = {"d_loss": d_loss, "g_loss": g_loss, "w_dist": w_dist, "noise_sigma": sigma}
        for k, tracker in self.trackers.items():
            tracker.update_state(values[k])
        return {k: t.result() for k, t in self.trackers.items()}
