"""Any cnnctl classifier as a backbone: named multi-scale feature maps and a separable head.

Dense prediction heads (U-Net decoders, Faster R-CNN's RPN and RoI heads, captioning encoders) want
a network's feature maps at several strides, as keras-hub's ``Backbone.pyramid_outputs`` and timm's
``features_only`` give them. Here they are found from the graph rather than from layer names, so
every registered architecture has them with no per-model table:

``pyramid_outputs(model)`` -> ``{"P1": (b, H/2, W/2, c1), "P2": (b, H/4, W/4, c2), ...}``: for each
power-of-two stride ``s = 2^k`` the feature map of the *last* layer (in network order, on the main
output's path, and which every path from input to output passes through) whose output is a 4-d map of about ``H/s x W/s`` -- the deepest features at that
resolution, as a feature pyramid network takes them: a ResNet stage's output; in inverted-residual
networks (EfficientNet) the expanded map that enters the next stage's strided depthwise convolution. ``backbone(model)``
turns that into a multi-output model; ``split_head(model)`` gives the layer where the classifier
begins (the input of ``cnnctl.train.finetune.classifier_layer``'s pooled features).
"""

from __future__ import annotations

import keras

from cnnctl.errors import CnnctlError


def functional(model):
    """The functional graph of ``model`` (networks with auxiliary classifiers wrap one)."""
    return getattr(model, "network", model)


def _main_path(model) -> set[int]:
    """ids of the layers the main (first) output depends on: auxiliary heads are not features."""
    seen, stack = set(), [model.outputs[0]]
    while stack:
        history = stack.pop()._keras_history
        op = history.operation
        if id(op) in seen:
            continue
        seen.add(id(op))
        stack.extend(op._inbound_nodes[history.node_index].input_tensors)
    return seen


def _cut_layers(model) -> set[int]:
    """ids of the main-path layers every input-to-output path passes through (a stage's output, a
    residual block's sum, a concatenation) -- never a branch inside an Inception or reduction block.
    In a topological order a layer is such a cut exactly when no edge jumps over it."""
    main = _main_path(model)
    order = [layer for layer in model.layers if id(layer) in main]      # Keras keeps layers topologically
    pos = {id(layer): i for i, layer in enumerate(order)}
    cover = [0] * (len(order) + 1)
    for layer in order:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                u = pos.get(id(t._keras_history.operation))
                v = pos[id(layer)]
                if u is not None and v - u > 1:
                    cover[u + 1] += 1
                    cover[v] -= 1
    cuts, running = set(), 0
    for i, layer in enumerate(order):
        running += cover[i]
        if running == 0:
            cuts.add(id(layer))
    return cuts


def pyramid_outputs(model) -> dict:
    """{"P<k>": KerasTensor} for every stride 2^k at which ``model`` has a 4-d feature map (k >= 1).

    The stride of a map is ``round(log2(H / h))``: networks with valid padding (AlexNet's 227 -> 55 ->
    27 -> 13 -> 6, Inception-v3's 299 -> 73 -> 35 -> 17 -> 8) land on the level they stand for.
    """
    import math

    model = functional(model)
    height = int(model.inputs[0].shape[1])
    cuts = _cut_layers(model)
    found: dict[int, object] = {}
    for layer in model.layers:
        out = getattr(layer, "output", None)
        if isinstance(layer, keras.layers.InputLayer) or out is None or isinstance(out, (list, tuple)) \
                or len(out.shape) != 4 or id(layer) not in cuts:
            continue
        h = out.shape[1]
        if h is None or h < 2:
            continue
        k = round(math.log2(height / h))
        if k >= 1:
            found[k] = out                          # later layers at the same level replace earlier ones
    if not found:
        raise CnnctlError(f"{model.name} has no feature map smaller than its {height}px input",
                          hint="use a convolutional network as the backbone")
    return {f"P{k}": found[k] for k in sorted(found)}


def backbone(model, levels: list[str] | None = None, name: str | None = None):
    """A model ``image -> {level: feature map}`` sharing ``model``'s layers and weights."""
    pyramid = pyramid_outputs(model)
    model = functional(model)
    levels = levels or list(pyramid)
    missing = [lv for lv in levels if lv not in pyramid]
    if missing:
        raise CnnctlError(f"{model.name} has no feature map at level(s) {', '.join(missing)}",
                          hint=f"it has {', '.join(pyramid)} at a {model.inputs[0].shape[1]}px input")
    return keras.Model(model.inputs[0], {lv: pyramid[lv] for lv in levels}, name=name or f"{model.name}_backbone")


def split_head(model):
    """-> (the pooled feature tensor the classifier reads, the classifier layer)."""
    from cnnctl.train.finetune import classifier_layer

    head = classifier_layer(model)
    return head.input, head
