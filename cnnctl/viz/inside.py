"""Looking inside a trained classifier (Zeiler & Fergus 2014; Simonyan et al. 2014; Selvaraju et al. 2017).

Arrays in, arrays out; ``cnnctl.viz.pictures`` turns them into PNG files.

- ``first_layer_filters``: the first convolution's kernels, one tile per filter.
- ``maximise_activation``: an input that excites one channel of a deeper layer (gradient ascent
  with L2 decay and blur, Yosinski et al. 2015's regularisers).
- ``activations``: a layer's feature maps for one image.
- ``deconvnet``: ZFNet sec. 2.1 -- a feature map's strongest activation projected back to pixels
  through the layers in reverse: max-unpooling with the switches recorded in the forward pass,
  rectification, and convolution with the transposed filters. Exact for chains of
  convolution / ReLU / pooling / fully connected layers (LeNet, AlexNet, ZFNet, VGG); other
  networks (residual or multi-branch) get guided backpropagation (Springenberg et al. 2015),
  and the result says which was used.
- ``occlusion``: ZFNet sec. 4.2 -- a grey square slid over the image; the true class's
  probability and the strongest feature map's activity at each position.
- ``saliency``: |d score / d pixel| (Simonyan et al. 2014).
- ``gradcam``: ReLU of the class-gradient-weighted sum of a layer's maps (Selvaraju et al. 2017).
"""

from __future__ import annotations

import contextlib

import numpy as np

from cnnctl.errors import CnnctlError
from cnnctl.layers.switches import max_pool_with_switches, unpool

# ----------------------------------------------------------------------------- model plumbing

def main_network(model):
    """The network whose first output is the class scores (unwraps auxiliary-classifier models)."""
    import keras

    inner = getattr(model, "network", None)
    if inner is None:
        return model
    return keras.Model(inner.inputs[0], inner.outputs[0], name=inner.name)


def layer_table(model) -> list[tuple[str, tuple]]:
    return [(layer.name, tuple(layer.output.shape[1:])) for layer in _body_layers(model)]


def get_layer(model, name: str):
    names = [layer.name for layer in model.layers]
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        table = ", ".join(f"{n} {s}" for n, s in layer_table(model))
        raise CnnctlError(f"{model.name} has no layer {name!r}",
                          hint=(f"did you mean {', '.join(close)}? " if close else "") + f"layers (output shape): {table}")
    return model.get_layer(name)


def conv_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
            and len(layer.output.shape) == 4]


def default_conv_layer(model, last: bool = True):
    convs = conv_layers(model)
    if not convs:
        raise CnnctlError(f"{model.name} has no convolutional layer to look at",
                          hint="this picture needs a convolutional network")
    return convs[-1] if last else convs[0]


def _spatial_layer(model, name: str | None):
    layer = get_layer(model, name) if name else default_conv_layer(model, last=True)
    if len(layer.output.shape) != 4:
        raise CnnctlError(f"layer {layer.name} has output {tuple(layer.output.shape[1:])}, not feature maps",
                          hint="choose a convolution, pooling or activation layer: "
                               + ", ".join(n for n, s in layer_table(model) if len(s) == 3))
    return layer


# ----------------------------------------------------------------------------- filters

def first_layer_filters(model, layer_name: str | None = None) -> tuple[np.ndarray, str]:
    """(filters, h, w, 1 or 3) kernels normalised to [0, 1] per filter, and the layer's name."""
    layer = get_layer(model, layer_name) if layer_name else default_conv_layer(model, last=False)
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) != 4:
        raise CnnctlError(f"layer {layer.name} has no convolution kernel")
    k = np.asarray(kernel, dtype=np.float32)                      # (kh, kw, cin, cout)
    if k.shape[2] not in (1, 3):
        raise CnnctlError(f"layer {layer.name} sees {k.shape[2]} channels: its kernels are not images",
                          hint="use --maximise for deeper layers (an input that excites each channel)")
    tiles = np.moveaxis(k, 3, 0)                                  # (cout, kh, kw, cin)
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    return (tiles - lo) / np.maximum(hi - lo, 1e-12), layer.name


def maximise_activation(model, layer_name: str, channels: list[int], steps: int = 60, lr: float = 8.0,
                        decay: float = 1e-3, blur_every: int = 4, seed: int = 0) -> np.ndarray:
    """Inputs (len(channels), h, w, c) in [0, 255] that maximise each channel's mean activation."""
    import keras
    import tensorflow as tf

    layer = get_layer(model, layer_name)
    probe = keras.Model(model.inputs[0], layer.output)
    shape = tuple(int(s) for s in model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    x = tf.Variable(127.5 + rng.normal(0, 10, (len(channels),) + shape).astype(np.float32))
    for step in range(steps):
        with tf.GradientTape() as tape:
            act = tf.cast(probe(x, training=False), tf.float32)
            objective = tf.reduce_sum(_channel_means(act, channels))  # image i excites channel channels[i]
        g = tape.gradient(objective, x)
        g = g / (tf.sqrt(tf.reduce_mean(tf.square(g), axis=list(range(1, len(shape) + 1)), keepdims=True)) + 1e-8)
        x.assign_add(lr * g)
        x.assign((x - 127.5) * (1 - decay) + 127.5)
        if blur_every and step % blur_every == 0 and len(shape) == 3:
            x.assign(_blur(x))
        x.assign(tf.clip_by_value(x, 0.0, 255.0))
    return x.numpy()


def _channel_means(act, channels):
    import tensorflow as tf

    rows = [tf.reduce_mean(act[i, ..., c]) for i, c in enumerate(channels)]
    return tf.stack(rows)


def _blur(x):
    import tensorflow as tf

    k = tf.constant([1.0, 2.0, 1.0]) / 4.0
    kernel = (k[:, None] * k[None, :])[:, :, None, None]
    c = x.shape[-1]
    kernel = tf.tile(kernel, [1, 1, c, 1])
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")


# ----------------------------------------------------------------------------- activations

def activations(model, x: np.ndarray, layer_name: str | None) -> tuple[np.ndarray, str, tuple]:
    """Feature maps (h, w, channels) of one image at a layer, its name and output shape."""
    import keras

    layer = _spatial_layer(model, layer_name)
    probe = keras.Model(model.inputs[0], layer.output)
    maps = np.asarray(probe(x[:1], training=False), dtype=np.float32)[0]
    return maps, layer.name, tuple(layer.output.shape[1:])


# ----------------------------------------------------------------------------- deconvnet

def _body_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def is_chain(model) -> bool:
    """True when every layer has one input, the previous layer's output (a plain stack)."""
    import keras

    prev = None
    for layer in _body_layers(model):
        nodes = layer._inbound_nodes
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            return False
        source = nodes[0].input_tensors[0]._keras_history.operation
        if prev is None:
            if not isinstance(source, keras.layers.InputLayer):
                return False
        elif source is not prev:
            return False
        prev = layer
    return True


def _relu_layer(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") == "relu"
    return False


def _fused_relu(layer) -> bool:
    act = getattr(layer, "activation", None)
    return act is not None and getattr(act, "__name__", "") == "relu"


def _deconv_chain(model, x, layer, channel: int, position) -> np.ndarray:
    """ZFNet's deconvnet on a plain stack, with explicit switches; returns the pixel-space projection."""
    import keras
    import tensorflow as tf

    body = _body_layers(model)
    stack = body[:body.index(layer) + 1]
    inputs, switches = [], {}
    h = tf.convert_to_tensor(x[:1], tf.float32)
    for lay in stack:
        inputs.append(h)
        if isinstance(lay, keras.layers.MaxPooling2D):
            out, sw = max_pool_with_switches(h, lay.pool_size, lay.strides, lay.padding)
            switches[lay.name] = sw
            h = out
        else:
            h = tf.cast(lay(h, training=False), tf.float32)
    signal = np.zeros(h.shape, np.float32)
    signal[(0,) + tuple(position) + (channel,)] = float(h[(0,) + tuple(position) + (channel,)])
    signal = tf.constant(signal)
    for lay, inp in zip(reversed(stack), reversed(inputs)):
        if isinstance(lay, keras.layers.MaxPooling2D):
            signal = unpool(signal, switches[lay.name], inp.shape)          # switches
        elif _relu_layer(lay):
            signal = tf.nn.relu(signal)                                      # rectification
        else:
            if _fused_relu(lay):
                signal = tf.nn.relu(signal)
            signal = _linear_transpose(lay, inp, signal)                     # transposed filters
    return signal.numpy()[0]


def _linear_transpose(layer, inp, signal):
    """The transpose of the layer's linear map (for a convolution: convolution with the flipped,
    transposed filters), applied to ``signal``; other layers by their input-gradient."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inp)
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.convolution_op(inp, tf.cast(layer.kernel, inp.dtype))
        elif isinstance(layer, keras.layers.Dense):
            out = tf.matmul(inp, tf.cast(layer.kernel, inp.dtype))
        else:
            out = tf.cast(layer(inp, training=False), tf.float32)
    return tape.gradient(out, inp, output_gradients=tf.cast(signal, out.dtype))


@contextlib.contextmanager
def _guided_relu():
    """While active, Keras' relu / relu6 pass back only positive gradients where the input was positive."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as tf_nn

    @tf.custom_gradient
    def guided(x):
        y = tf.nn.relu(x)

        def grad(dy):
            return dy * tf.cast(dy > 0, dy.dtype) * tf.cast(x > 0, dy.dtype)

        return y, grad

    @tf.custom_gradient
    def guided6(x):
        y = tf.nn.relu6(x)

        def grad(dy):
            return dy * tf.cast(dy > 0, dy.dtype) * tf.cast((x > 0) & (x < 6), dy.dtype)

        return y, grad

    saved = tf_nn.relu, tf_nn.relu6
    tf_nn.relu, tf_nn.relu6 = guided, guided6
    try:
        yield
    finally:
        tf_nn.relu, tf_nn.relu6 = saved


def _guided_backprop(model, x, layer, channel: int, position) -> np.ndarray:
    import keras
    import tensorflow as tf

    probe = keras.Model(model.inputs[0], layer.output)
    inp = tf.convert_to_tensor(x[:1], tf.float32)
    with _guided_relu(), tf.GradientTape() as tape:
        tape.watch(inp)
        out = tf.cast(probe(inp, training=False), tf.float32)
        target = out[(0,) + tuple(position) + (channel,)]
    return tape.gradient(target, inp).numpy()[0]


def deconvnet(model, images: np.ndarray, layer_name: str | None, top: int = 9):
    """Top activations of a layer projected to pixel space.

    One image: the ``top`` channels with the strongest activation, each projected from its
    maximum. Several images: the channel with the strongest activations over them, projected
    from each of its ``top`` strongest images (ZFNet's figures). Returns
    (projections (n, h, w, c), the images they come from (n, h, w, c), captions, method).
    """
    import keras

    layer = _spatial_layer(model, layer_name)
    probe = keras.Model(model.inputs[0], layer.output)
    acts = np.asarray(probe(images, training=False), dtype=np.float32)          # (n, h, w, k)
    chain = is_chain(model)
    project = _deconv_chain if chain else _guided_backprop
    method = ("deconvnet (unpooling with switches, rectification, transposed filters)" if chain
              else "guided backpropagation (the network is not a plain conv/ReLU/pool stack)")
    picks = []
    if len(images) == 1:
        strength = acts[0].reshape(-1, acts.shape[-1]).max(axis=0)
        for ch in np.argsort(-strength)[:top]:
            pos = np.unravel_index(np.argmax(acts[0, ..., ch]), acts.shape[1:3])
            picks.append((0, int(ch), pos, f"channel {ch}"))
    else:
        per_image = acts.reshape(len(images), -1, acts.shape[-1]).max(axis=1)   # (n, k)
        ch = int(np.argmax(np.sort(per_image, axis=0)[-top:].sum(axis=0)))
        for i in np.argsort(-per_image[:, ch])[:top]:
            pos = np.unravel_index(np.argmax(acts[i, ..., ch]), acts.shape[1:3])
            picks.append((int(i), ch, pos, f"image {i}, channel {ch}"))
    projections = np.stack([project(model, images[i:i + 1], layer, ch, pos) for i, ch, pos, _ in picks])
    return projections, images[[i for i, _, _, _ in picks]], [c for *_, c in picks], method, layer.name


# ----------------------------------------------------------------------------- occlusion

def occlusion(model, x: np.ndarray, label: int | None, size: int | None = None, stride: int | None = None,
              fill: float = 127.5, batch: int = 128, feature_layer: str | None = None):
    """ZFNet sec. 4.2 for one image (h, w, c) in [0, 255].

    Returns (probability map of ``label`` -- the predicted class when None -- at each occluder
    position, the strongest feature map's total activity at each position (None for a network
    without convolutions), label, its unoccluded probability, the occluder size and stride, the
    feature layer's name and channel).
    """
    import keras
    import tensorflow as tf

    h, w = x.shape[:2]
    size = size or max(2, round(min(h, w) / 6))
    stride = stride or max(1, size // 2)
    has_maps = feature_layer is not None or bool(conv_layers(model))
    layer = _spatial_layer(model, feature_layer) if has_maps else None
    outputs = [model.outputs[0]] + ([layer.output] if layer is not None else [])
    probe = keras.Model(model.inputs[0], outputs)

    def run(batch_x):
        out = probe(batch_x, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        probs = tf.nn.softmax(tf.cast(out[0], tf.float32)).numpy()
        maps = np.asarray(out[1], dtype=np.float32) if len(out) > 1 else None
        return probs, maps

    probs, maps = run(x[None])
    label = int(np.argmax(probs[0])) if label is None else int(label)
    channel = int(np.argmax(maps[0].reshape(-1, maps.shape[-1]).max(axis=0))) if maps is not None else None
    ys = list(range(0, max(1, h - size + 1), stride))
    xs = list(range(0, max(1, w - size + 1), stride))
    boxes = [(y, x0) for y in ys for x0 in xs]
    prob_map = np.zeros((len(ys), len(xs)), np.float32)
    feat_map = np.zeros_like(prob_map) if maps is not None else None
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        occluded = np.repeat(x[None], len(chunk), axis=0)
        for n, (y, x0) in enumerate(chunk):
            occluded[n, y:y + size, x0:x0 + size] = fill
        p, mp = run(occluded)
        for n, (y, x0) in enumerate(chunk):
            prob_map[ys.index(y), xs.index(x0)] = p[n, label]
            if feat_map is not None:
                feat_map[ys.index(y), xs.index(x0)] = mp[n, ..., channel].sum()
    return (prob_map, feat_map, label, float(probs[0, label]), size, stride,
            layer.name if layer is not None else None, channel)


def occlusion_to_pixels(grid_map: np.ndarray, shape, size: int, stride: int) -> np.ndarray:
    """Spread an occluder-position map to pixels: each pixel averages the positions covering it."""
    h, w = shape
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for i in range(grid_map.shape[0]):
        for j in range(grid_map.shape[1]):
            y, x0 = i * stride, j * stride
            total[y:y + size, x0:x0 + size] += grid_map[i, j]
            count[y:y + size, x0:x0 + size] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ----------------------------------------------------------------------------- gradients

def saliency(model, x: np.ndarray, label: int | None = None) -> tuple[np.ndarray, int]:
    """max over channels of |d logit_label / d pixel| for one image (h, w, c) -> (h, w), label."""
    import tensorflow as tf

    inp = tf.convert_to_tensor(x[None], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inp)
        logits = tf.cast(model(inp, training=False), tf.float32)
        label = int(tf.argmax(logits[0])) if label is None else int(label)
        score = logits[0, label]
    g = tape.gradient(score, inp).numpy()[0]
    return np.abs(g).max(axis=-1), label


def gradcam(model, x: np.ndarray, layer_name: str | None = None, label: int | None = None):
    """Grad-CAM for one image: (cam (h', w') >= 0 at the layer's resolution, label, layer name).

    alpha_k = mean over positions of d y_label / d A_k;  cam = ReLU(sum_k alpha_k A_k).
    """
    import keras
    import tensorflow as tf

    layer = _spatial_layer(model, layer_name)
    probe = keras.Model(model.inputs[0], [layer.output, model.outputs[0]])
    inp = tf.convert_to_tensor(x[None], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inp)
        maps, logits = probe(inp, training=False)          # maps: the tensor the logits are computed from
        logits = tf.cast(logits, tf.float32)
        label = int(tf.argmax(logits[0])) if label is None else int(label)
        score = logits[0, label]
    g = tape.gradient(score, maps)
    if g is None:
        raise CnnctlError(f"the class score does not depend on layer {layer.name}")
    g, maps = tf.cast(g, tf.float32), tf.cast(maps, tf.float32)
    alpha = tf.reduce_mean(g[0], axis=(0, 1))                                 # (k,)
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * alpha, axis=-1)).numpy()         # (h', w')
    return cam, label, layer.name
