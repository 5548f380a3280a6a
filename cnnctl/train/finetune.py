"""Transfer learning: a pretrained network, a new classifier head, and what stays frozen.

Freeze modes (``finetune.freeze``):
- ``conv``: every layer except the fully connected classifier (the trailing
  Dense layers) is frozen; the classifier's last layer is replaced by a new
  head (Yosinski et al. 2014's "frozen features" setting).
- ``features``: the same network, but the frozen body's output (the input
  of the fully connected classifier) is computed once per image and stored
  in the run directory; the classifier trains on the stored vectors
  (``features.fit_features``), so an epoch costs only the classifier.
- ``partial:N``: the first N stages are frozen; the rest of the body trains
  at ``body_lr_scale`` x the classifier's rate. A stage is the group of layers whose
  names share the part before the first ``_`` (``stem``, ``stage1`` ...
  ``stage7``, ``head`` for EfficientNet-Lite0; ``conv1``, ``bn1``, ... for
  networks named layer by layer).
- ``until:LAYER``: every layer up to and including LAYER is frozen.
- ``none``: everything trains (the body at ``body_lr_scale``).

A frozen layer has ``trainable = False``; for batch norm that also means
inference mode (Keras 3 semantics, kept by ``FusedBatchNormalization``), so
the moving statistics of frozen BN layers never change (keras#9214).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnctl.errors import CnnctlError


@dataclass
class Source:
    model: object            # keras.Model with its pretrained weights
    name: str                # registered architecture name
    classes: list[str] | None
    where: str               # for messages


def load_source(ft, log=print) -> Source:
    """The pretrained network of ``ft`` (a FinetuneConfig)."""
    if bool(ft.from_run) == bool(ft.backbone):
        raise CnnctlError("give exactly one pretrained network: --from RUN_DIR or --backbone NAME",
                          hint="e.g. cnnctl finetune --data DIR --backbone efficientnet_lite0 --weights imagenet --freeze conv")
    if ft.from_run:
        from cnnctl.inference import load_run_model

        run = Path(ft.from_run)
        if not run.is_dir():
            raise CnnctlError(f"--from {run}: no such run directory", hint="give a folder written by `cnnctl train`")
        which = "best" if (run / "best.keras").is_file() else "model"
        if not (run / f"{which}.keras").is_file():
            raise CnnctlError(f"--from {run} has no trained model (no model.keras or best.keras)",
                              hint="give a run that finished at least one epoch")
        model, classes, cfg = load_run_model(run, which)
        if getattr(model, "network", None) is not None:
            raise CnnctlError(f"{run} holds a network with auxiliary classifiers, which finetune does not take apart",
                              hint="train it with --set model.aux=false to fine-tune it")
        for layer in model.layers:  # what was frozen while it trained is not frozen now
            layer.trainable = True
        return Source(model, cfg.model.name, list(classes), f"{run}/{which}.keras")
    from cnnctl.weights import imagenet_class_names, load_pretrained

    model = load_pretrained(ft.backbone, ft.weights, log=log)
    classes = imagenet_class_names() if ft.weights == "imagenet" else None
    return Source(model, ft.backbone, classes, f"{ft.backbone} ({ft.weights})")


def classifier_layer(model):
    """The layer that produces ``model``'s class scores: a Dense layer, or a 1x1 convolution on a 1x1 map
    (MobileNetV3, NiN-style heads), reached through trailing Flatten / Reshape / activation layers."""
    import keras

    layer = model.outputs[0]._keras_history.operation
    passthrough = (keras.layers.Activation, keras.layers.Softmax, keras.layers.Flatten, keras.layers.Reshape)
    while isinstance(layer, passthrough):
        layer = layer.input._keras_history.operation
    if isinstance(layer, keras.layers.Dense):
        return layer
    if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1) \
            and tuple(layer.output.shape[1:3]) == (1, 1):
        return layer
    raise CnnctlError(f"cannot find the classifier of {model.name}: its scores come from a "
                      f"{type(layer).__name__} layer, not a fully connected one",
                      hint="fine-tune networks that end in a Dense layer or a 1x1 convolution on pooled features")


def _units(layer) -> int:
    return int(layer.units if hasattr(layer, "units") else layer.filters)


def stages(model, exclude: set[str]) -> list[tuple[str, list]]:
    """[(stage name, its layers with weights)] in network order; ``exclude`` names the head's layers."""
    groups: dict[str, list] = {}
    for layer in model.layers:
        if layer.name in exclude or not layer.trainable_weights:
            continue
        groups.setdefault(layer.name.split("_")[0], []).append(layer)
    return list(groups.items())


@dataclass
class Plan:
    model: object                 # the network to train: pretrained body + (new) head
    head: list[str]               # layer names that train at the full rate
    frozen: list[str]             # frozen layer names
    body_paths: list[str]         # variable paths of the unfrozen body (trained at body_lr_scale)
    new_head: bool
    features: object = None       # the tensor feeding the FC classifier (for ``features`` mode)


def build(ft, num_classes: int, log=print, source: Source | None = None) -> Plan:
    """The fine-tuning network for ``num_classes`` classes with the layers of ``ft.freeze`` frozen."""
    import keras

    source = source or load_source(ft, log)
    net = source.model
    old_head = classifier_layer(net)
    features = old_head.input
    if len(features.shape) == 4:  # a 1x1-convolution classifier on a (1, 1, C) map
        features = keras.layers.Flatten(name="finetune_flatten")(features)
    if ft.keep_head:
        if _units(old_head) != num_classes:
            raise CnnctlError(f"--keep-head: {source.where} predicts {_units(old_head)} classes, the data has "
                              f"{num_classes}", hint="drop --keep-head to train a new head")
        model, head_name, new_head = net, old_head.name, False
    else:
        head = keras.layers.Dense(num_classes, dtype="float32", name="finetune_logits")
        model = keras.Model(net.inputs[0], head(features), name=net.name)
        head_name, new_head = head.name, True
        log(f"new {num_classes}-class head on {source.where} (it predicted {_units(old_head)} classes)")
    # The fully connected classifier: the trailing run of Dense layers (AlexNet's fc6-fc8, EfficientNet's
    # one). It trains at the full rate in every mode; the convolutional body is what the modes freeze.
    block = []
    for layer in reversed([layer for layer in model.layers if layer.trainable_weights or layer.name == head_name]):
        if not isinstance(layer, keras.layers.Dense):
            break
        block.insert(0, layer)
    head_names = {layer.name for layer in block} | {head_name}
    features = block[0].input if block else features
    frozen = frozen_layers(model, ft.freeze, head_names)
    for layer in frozen:
        layer.trainable = False
    frozen_names = {layer.name for layer in frozen}
    body_paths = [w.path for layer in model.layers if layer.name not in head_names | frozen_names
                  for w in layer.trainable_weights]
    return Plan(model, sorted(head_names), sorted(frozen_names), body_paths, new_head, features)


def frozen_layers(model, mode: str, exclude: set[str]) -> list:
    """The layers of ``model`` that freeze mode ``mode`` freezes (``exclude``: the new head's layer names,
    which train in every mode): conv / features -> every other layer with weights; partial:N -> the first
    N stages; until:LAYER -> up to and including LAYER; none -> nothing."""
    frozen: list = []
    if mode in ("conv", "features"):
        frozen = [layer for layer in model.layers if layer.name not in exclude and layer.weights]
    elif mode.startswith("partial:"):
        try:
            n = int(mode.split(":", 1)[1])
        except ValueError:
            raise CnnctlError(f"--freeze {mode}: N must be a whole number of stages", hint="e.g. partial:2") from None
        groups = stages(model, exclude)
        if n > len(groups):
            raise CnnctlError(f"--freeze {mode}: the network has only {len(groups)} stages",
                              hint="stages: " + ", ".join(name for name, _ in groups))
        frozen = [layer for _, layers in groups[:n] for layer in layers]
    elif mode.startswith("until:"):
        target = mode.split(":", 1)[1]
        names = [layer.name for layer in model.layers]
        if target not in names:
            import difflib

            close = difflib.get_close_matches(target, names, n=3)
            weighted = [layer.name for layer in model.layers if layer.weights]
            raise CnnctlError(f"--freeze until:{target}: the network has no layer {target!r}",
                              hint=(f"did you mean {', '.join(close)}? " if close else "")
                              + f"its {len(weighted)} layers with weights: " + ", ".join(weighted))
        upto = names.index(target)
        frozen = [layer for layer in model.layers[: upto + 1] if layer.weights]
    elif mode != "none":
        raise CnnctlError(f"unknown --freeze {mode!r}", hint="choose conv, features, partial:N, until:LAYER or none")
    return frozen
