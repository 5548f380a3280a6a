"""Caption generators over frozen image features: Show and Tell (LSTM) and Karpathy's multimodal RNN.

Both standardise the flattened features (``image_norm``: the training
features' mean and variance, set by the caption task; encoders differ in
scale by orders of magnitude). Both take ``features`` ``(cells, dim)`` -- the encoder's last feature map
average-pooled to a ``g x g`` grid of cells (``g = 1`` is the papers' single
image vector; a grid keeps where things are, which a sentence such as "a bag
above a sandal" needs) -- and ``tokens`` ``(T,)``: ``<start> w1 .. wk``
padded with 0. They return logits ``(T, vocab)`` for ``w1 .. wk <end>``.

``CaptionStepper`` runs a trained model one word at a time (greedy and beam
search, ``cnnctl.tasks.caption``), with the same layers and weights.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from cnnctl.models.registry import register


@keras.saving.register_keras_serializable(package="cnnctl")
class FirstStepAdd(layers.Layer):
    """``x (b, T, d)``, ``bias (b, d)`` -> x with ``bias`` added at t = 0 only (the mRNN's image bias)."""

    def call(self, inputs):
        x, bias = inputs
        first = x[:, :1] + keras.ops.expand_dims(bias, 1)
        return keras.ops.concatenate([first, x[:, 1:]], axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="cnnctl")
class ElmanCell(layers.Layer):
    """``h_t = relu(u_t + W_hh h_{t-1} + b_h)``: the recurrence of Karpathy & Fei-Fei eq. (in sec. 3.2),
    where ``u_t = W_hx x_t (+ b_v at t = 1)`` is computed outside so the image bias can join it."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        self.recurrent_kernel = self.add_weight((self.units, self.units), initializer="orthogonal",
                                                name="recurrent_kernel")
        self.bias = self.add_weight((self.units,), initializer="zeros", name="bias")

    def call(self, inputs, states, training=False):
        prev = states[0] if isinstance(states, (list, tuple)) else states
        h = keras.ops.relu(inputs + keras.ops.matmul(prev, self.recurrent_kernel) + self.bias)
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _inputs(input_shape):
    features = keras.Input(tuple(input_shape), name="features")           # (b, cells, dim)
    tokens = keras.Input((None,), dtype="int32", name="tokens")           # (b, T)
    return features, tokens


@register("show_and_tell", task="caption", input_shape=(1, 1280), num_classes=10_000,
          paper="Vinyals et al., Show and Tell: A Neural Image Caption Generator (CVPR 2015), sec. 3.1 and 4.3",
          reported_error="COCO: BLEU-4 27.7, CIDEr 85.5 (Table 1)")
def show_and_tell(num_classes: int = 10_000, input_shape=(1, 1280), embed_dim: int = 512, units: int = 512,
                  dropout: float = 0.5, image_dropout: float | None = None, image_every_step: bool = False):
    """The image embedding is the LSTM's input at t = -1 (never again); words follow from t = 0.

    ``x_{-1} = W_I CNN(I)``, ``x_t = W_e S_t`` (sec. 3.1, eq. 10-12), word embeddings and LSTM 512 wide
    (sec. 4.3.1), dropout on the embeddings and the LSTM output (sec. 4.3.1: "dropout and ensembling").

    Args:
        num_classes: the vocabulary size (with ``<pad> <start> <end> <unk>``).
        input_shape: (cells, dim) of the image features.
        image_dropout: the dropout rate on the image features alone (default: ``dropout``).
        image_every_step: also feed the image beside every word, ``x_t = W_e S_t + W_v CNN(I)``, as the
            m-RNN and LRCN do; the paper found this overfits (sec. 3.1), so it is off. ``W_v`` is its own
            projection, started at the word embeddings' scale: ``W_I CNN(I)`` is many times larger, and
            added as is it drowns the word (measured: captions that repeat a word or stop on "in").
    """
    features, tokens = _inputs(input_shape)
    image = layers.Flatten(name="image_flat")(features)
    image = layers.Normalization(name="image_norm")(image)   # set to the training features' mean / variance
    image = layers.Dropout(dropout if image_dropout is None else image_dropout, name="image_dropout")(image)
    feats = image                                                                    # (b, cells * dim)
    image = layers.Dense(embed_dim, name="image_embed")(image)                       # (b, E)
    image = layers.Reshape((1, embed_dim), name="image_step")(image)                  # (b, 1, E)
    words = layers.Embedding(num_classes, embed_dim, name="word_embed")(tokens)       # (b, T, E)
    words = layers.Dropout(dropout, name="word_dropout")(words)
    if image_every_step:
        # per-dimension std about 0.03 at the start, as the word embeddings' (uniform +-0.05)
        small = keras.initializers.RandomNormal(stddev=0.03 / math.sqrt(feats.shape[-1]))
        beside = layers.Dense(embed_dim, kernel_initializer=small, name="image_beside_words")(feats)
        beside = layers.Reshape((1, embed_dim), name="image_beside_step")(beside)    # (b, 1, E)
        words = layers.Add(name="image_every_step")([words, beside])                 # (b, T, E)
    seq = layers.Concatenate(axis=1, name="image_then_words")([image, words])        # (b, 1 + T, E)
    h = layers.LSTM(units, return_sequences=True, name="lstm")(seq)                   # (b, 1 + T, H)
    h = layers.Cropping1D((1, 0), name="drop_image_step")(h)                         # (b, T, H)
    h = layers.Dropout(dropout, name="lstm_dropout")(h)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(h)             # (b, T, V)
    return keras.Model([features, tokens], logits, name="show_and_tell")


@register("mrnn", task="caption", input_shape=(1, 1280), num_classes=10_000,
          paper="Karpathy & Fei-Fei, Deep Visual-Semantic Alignments for Generating Image Descriptions "
                "(CVPR 2015), sec. 3.2",
          reported_error="Flickr8K: BLEU 57.9/38.3/24.5/16.0; COCO: BLEU 62.5/45.0/32.1/23.0, CIDEr 66.0 (Table 4)")
def mrnn(num_classes: int = 10_000, input_shape=(1, 1280), embed_dim: int = 512, units: int = 512,
         dropout: float = 0.5):
    """Karpathy's multimodal RNN: the image enters as a bias at the first step only.

    ``b_v = W_hi CNN(I)``; ``h_t = relu(W_hx x_t + W_hh h_{t-1} + b_h + 1(t = 1) b_v)``;
    ``y_t = softmax(W_oh h_t + b_o)`` (sec. 3.2). The first input is ``<start>``.
    """
    features, tokens = _inputs(input_shape)
    image = layers.Flatten(name="image_flat")(features)
    image = layers.Normalization(name="image_norm")(image)
    image = layers.Dropout(dropout, name="image_dropout")(image)
    image_bias = layers.Dense(units, name="image_bias")(image)                        # b_v (b, H)
    words = layers.Embedding(num_classes, embed_dim, name="word_embed")(tokens)       # (b, T, E)
    words = layers.Dropout(dropout, name="word_dropout")(words)
    u = layers.Dense(units, use_bias=False, name="word_to_hidden")(words)             # W_hx x_t (b, T, H)
    u = FirstStepAdd(name="image_at_first_step")([u, image_bias])
    h = layers.RNN(ElmanCell(units, name="rnn_cell"), return_sequences=True, name="rnn")(u)
    h = layers.Dropout(dropout, name="rnn_dropout")(h)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(h)
    return keras.Model([features, tokens], logits, name="mrnn")


def with_encoder(encoder, decoder):
    """One model ``{"image", "tokens"} -> logits``: the (trainable) encoder's features feed ``decoder``.

    The encoder runs with ``training=False`` (frozen batch-norm statistics, no dropout inside it);
    its weights still receive gradients. Named ``captioner``; ``split_captioner`` takes it apart.
    """
    image = keras.Input(tuple(encoder.inputs[0].shape[1:]), name="image")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    features = encoder(image, training=False)
    return keras.Model([image, tokens], decoder([features, tokens]), name="captioner")


def split_captioner(model):
    """-> (encoder or None, decoder): a ``with_encoder`` model's parts, or (None, model) for a decoder."""
    if model.name != "captioner":
        return None, model
    names = [layer.name for layer in model.layers]
    decoder = next(model.get_layer(n) for n in names if n not in ("image", "tokens", "encoder"))
    return model.get_layer("encoder"), decoder


class CaptionStepper:
    """One word at a time with a trained model's own layers (inference mode: dropout off).

    ``start(features)`` -> (the recurrent state before the first word, the first step's ``bias``);
    ``step(tokens, state, bias)`` -> (log-probabilities ``(n, V)`` of the next word, the new state, the
    next step's ``bias``). The bias is the image term added to a word's input: the mRNN's ``b_v`` at the
    first step only, Show and Tell's ``W_v CNN(I)`` at every step with ``image_every_step``, zeros otherwise.
    A caller threads it like the state, so no caller needs to know which model it decodes.
    """

    def __init__(self, model):
        import tensorflow as tf

        self.kind = model.name
        if self.kind not in ("show_and_tell", "mrnn"):
            from cnnctl.errors import CnnctlError

            raise CnnctlError(f"{model.name!r} is not a caption generator cnnctl can decode",
                              hint="give a run trained with model show_and_tell or mrnn")
        get = model.get_layer
        self.flat, self.norm = get("image_flat"), get("image_norm")
        self.embed, self.logits = get("word_embed"), get("logits")
        if self.kind == "show_and_tell":
            self.image_embed, self.cell = get("image_embed"), get("lstm").cell
            self.bias_width = self.image_embed.units                       # E: it joins the word embedding
            self.image_every_step = any(layer.name == "image_every_step" for layer in model.layers)
            self.image_beside = get("image_beside_words") if self.image_every_step else None
        else:
            self.image_bias, self.to_hidden = get("image_bias"), get("word_to_hidden")
            self.cell = get("rnn").cell
            self.bias_width = self.cell.units                              # H: it joins W_hx x_t
            self.image_every_step = False
        self.units = self.cell.units
        self.num_states = 2 if self.kind == "show_and_tell" else 1         # LSTM (h, c); Elman h
        spec = tf.TensorSpec((None,), tf.int32)
        state_spec = [tf.TensorSpec((None, self.units), tf.float32)] * self.num_states
        self._start = tf.function(self._start_impl, reduce_retracing=True)
        self._step = tf.function(self._step_impl, input_signature=[
            spec, state_spec, tf.TensorSpec((None, self.bias_width), tf.float32)])

    def _start_impl(self, features):
        import tensorflow as tf

        flat = tf.cast(self.norm(self.flat(features)), tf.float32)
        n = tf.shape(flat)[0]
        zeros = tf.zeros((n, self.units), tf.float32)
        if self.kind == "mrnn":
            return [zeros], tf.cast(self.image_bias(flat), tf.float32)          # b_v (n, H)
        image = self.image_embed(flat)                                           # x_{-1} (n, E)
        _, state = self.cell(image, [zeros, zeros], training=False)
        state = [tf.cast(x, tf.float32) for x in state]                           # bfloat16 under mixed precision
        if self.image_every_step:
            return state, tf.cast(self.image_beside(flat), tf.float32)            # W_v CNN(I) (n, E)
        return state, tf.zeros_like(tf.cast(image, tf.float32))

    def _step_impl(self, tokens, state, bias):
        import tensorflow as tf

        x = self.embed(tokens)
        if self.kind == "mrnn":
            x = self.to_hidden(x) + tf.cast(bias, x.dtype)
        elif self.image_every_step:
            x = x + tf.cast(bias, x.dtype)
        h, state = self.cell(x, state, training=False)
        next_bias = bias if self.image_every_step else tf.zeros_like(bias)     # the mRNN's: first step only
        # states leave in float32 whatever the policy (exported signatures take float32 states)
        return (tf.nn.log_softmax(tf.cast(self.logits(h), tf.float32)), [tf.cast(x, tf.float32) for x in state],
                next_bias)

    def start(self, features):
        """-> (state, bias) before the first word."""
        return self._start(features)

    def step(self, tokens, state, bias):
        """-> (log-probabilities of the next word, new state, next bias)."""
        return self._step(tokens, state, bias)


class EnsembleStepper:
    """Several trained captioners decoding as one: Show and Tell's "dropout and ensembling" (sec. 4.3.1).

    The next word's distribution is the members' mean probability, ``log((1/M) sum_m p_m(w))``; the
    state is the members' states one after another, the bias their biases side by side, so
    ``beam_search`` threads them as it threads one model's. The members must share one vocabulary
    (runs trained on the same captions with the same ``min_count``)."""

    def __init__(self, members):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.num_states = sum(m.num_states for m in self.members)
        self.bias_width = sum(m.bias_width for m in self.members)
        self._state_cuts = np.cumsum([m.num_states for m in self.members])[:-1]
        self._bias_cuts = np.cumsum([m.bias_width for m in self.members])[:-1]

    def start(self, features):
        """-> (every member's state, one after another; their biases side by side ``(n, sum of widths)``)."""
        states, biases = [], []
        for m in self.members:
            state, bias = m.start(features)
            states += [np.asarray(x) for x in state]
            biases.append(np.asarray(bias))
        return states, np.concatenate(biases, axis=1)

    def step(self, tokens, state, bias):
        """-> (log of the members' mean next-word probability ``(n, V)``, new states, next biases)."""
        states = np.split(np.arange(len(state)), self._state_cuts)
        biases = np.split(np.asarray(bias), self._bias_cuts, axis=1)
        logps, new_states, new_biases = [], [], []
        for m, which, b in zip(self.members, states, biases):
            logp, s, nb = m.step(tokens, [state[i] for i in which], np.ascontiguousarray(b))
            logps.append(np.asarray(logp, np.float64))
            new_states += [np.asarray(x) for x in s]
            new_biases.append(np.asarray(nb))
        mean = np.logaddexp.reduce(np.stack(logps), axis=0) - np.log(len(self.members))   # (n, V)
        return mean, new_states, np.concatenate(new_biases, axis=1)


@keras.saving.register_keras_serializable(package="cnnctl")
class AlignmentScores(layers.Layer):
    """Image-sentence scores of a batch: ``S_kl = sum_t max_i v^k_i . s^l_t`` over the real words t of
    sentence l and the regions i of image k (Karpathy & Fei-Fei eq. 8).

    Inputs: regions ``v (b, R, h)``, words ``s (b, T, h)``, tokens ``(b, T)`` (ids <= 1 -- padding and
    ``<start>`` -- and ``<end>`` (2) are not words). Output ``(b, b)``: row k = image k, column l = sentence l.
    """

    def call(self, inputs):
        v, s, tokens = inputs
        ops = keras.ops
        dots = ops.einsum("kih,lth->klit", v, s)                            # (b_img, b_sent, R, T)
        best = ops.max(dots, axis=2)                                       # (b_img, b_sent, T)
        words = ops.cast(ops.greater(tokens, 2), best.dtype)               # (b_sent, T)
        return ops.sum(best * words[None], axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[1][0])


@register("brnn_alignment", task="align", input_shape=(4, 256), num_classes=10_000,
          paper="Karpathy & Fei-Fei, Deep Visual-Semantic Alignments for Generating Image Descriptions "
                "(CVPR 2015), sec. 3.1",
          reported_error="Flickr8K image annotation R@1 16.5, R@5 40.6, R@10 54.2 (Table 1, full model)")
def brnn_alignment(num_classes: int = 10_000, input_shape=(4, 256), embed_dim: int = 300, units: int = 256,
                   dropout: float = 0.0):
    """Regions and words in one space, scored by the alignment of each word to its best region.

    Regions: the encoder's cells plus the whole image (their mean), ``v_i = W_m CNN(I_b_i) + b_m``
    (eq. 1). Words: ``x_t = W_w I_t``, ``e_t = relu(W_e x_t + b_e)``, a bidirectional ReLU RNN,
    ``s_t = relu(W_d (h_t^f + h_t^b) + b_d)`` (eq. 2-6). Output: the batch's score matrix
    (``AlignmentScores``), trained with ``alignment_ranking_loss`` (eq. 9, margin 1).

    Args:
        num_classes: the vocabulary size.
        input_shape: (cells, dim) of the region features.
    """
    features, tokens = _inputs(input_shape)
    whole = layers.GlobalAveragePooling1D(name="whole_image")(features)                # (b, dim)
    whole = layers.Reshape((1, int(input_shape[-1])), name="whole_image_region")(whole)
    regions = layers.Concatenate(axis=1, name="regions")([features, whole])           # (b, R + 1, dim)
    regions = layers.Normalization(name="image_norm")(regions)
    v = layers.Dense(units, name="region_embed")(regions)                              # (b, R + 1, h)
    x = layers.Embedding(num_classes, embed_dim, name="word_embed")(tokens)           # (b, T, E)
    x = layers.Dropout(dropout, name="word_dropout")(x)
    e = layers.Dense(units, activation="relu", name="word_in")(x)                      # e_t
    # Sentences are right-padded: the backward RNN reads each sentence's own tokens reversed (padding
    # stays at the end, after every real word), and its outputs are put back in word order.
    forward = layers.RNN(ElmanCell(units, name="forward_cell"), return_sequences=True, name="forward")
    backward = layers.RNN(ElmanCell(units, name="backward_cell"), return_sequences=True, name="backward")
    hf = forward(layers.Dense(units, use_bias=False, name="forward_in")(e))
    reversed_e = ReverseWords(name="words_reversed")([e, tokens])
    hb = backward(layers.Dense(units, use_bias=False, name="backward_in")(reversed_e))
    hb = ReverseWords(name="backward_in_order")([hb, tokens])
    s = layers.Dense(units, activation="relu", name="word_embed_out")(layers.Add(name="h_sum")([hf, hb]))
    scores = AlignmentScores(dtype="float32", name="scores")([v, s, tokens])
    return keras.Model([features, tokens], scores, name="brnn_alignment")


@keras.saving.register_keras_serializable(package="cnnctl")
class ReverseWords(layers.Layer):
    """``x (b, T, d)``, ``tokens (b, T)`` -> each row's first L steps reversed (L = its tokens > 0), the
    padding after them left in place. Its own inverse."""

    def call(self, inputs):
        x, tokens = inputs
        ops = keras.ops
        length = ops.sum(ops.cast(ops.greater(tokens, 0), "int32"), axis=1, keepdims=True)     # (b, 1)
        t = ops.arange(ops.shape(tokens)[1], dtype="int32")[None, :]                            # (1, T)
        index = ops.where(t < length, length - 1 - t, t)                                        # (b, T)
        index = ops.broadcast_to(index[..., None], ops.shape(x))
        return ops.take_along_axis(x, index, axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="cnnctl")
def alignment_ranking_loss(y_true, scores):
    """Karpathy & Fei-Fei eq. 9: for each pair k, ``sum_l max(0, S_kl - S_kk + 1) + max(0, S_lk - S_kk + 1)``
    (l != k), averaged over the batch. ``y_true`` is not used: the pairs are the diagonal."""
    ops = keras.ops
    diag = ops.diagonal(scores)                                              # (b,)
    n = ops.shape(scores)[0]
    off = 1.0 - ops.eye(n, dtype=scores.dtype)
    sentences = ops.relu(scores - diag[:, None] + 1.0) * off                 # rank sentences for image k
    images = ops.relu(scores - diag[None, :] + 1.0) * off                    # rank images for sentence l
    return ops.sum(sentences, axis=1) + ops.sum(images, axis=0)             # (b,): Keras averages
