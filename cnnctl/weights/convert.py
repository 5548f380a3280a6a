"""PyTorch state dicts -> cnnctl Keras models, one function per architecture.

Layouts: a PyTorch convolution kernel is (out, in, kh, kw) and Keras' is
(kh, kw, in, out); a depthwise kernel (channels, 1, kh, kw) becomes
(kh, kw, channels, 1); a linear layer (out, in) becomes (in, out). Batch norm
weight / bias / running_mean / running_var are gamma / beta / moving_mean /
moving_variance. Every tensor of the state dict must be used once and every
Keras weight set once, with matching shapes, or nothing is changed.
"""

from __future__ import annotations

import numpy as np

from cnnctl.models.efficientnet_lite import LITE0_STAGES


class MismatchError(ValueError):
    """The state dict does not fit the model (missing, unused or wrongly shaped tensors)."""


def _conv(w):
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w):
    return np.transpose(w, (2, 3, 0, 1))


def _dense(w):
    return np.transpose(w, (1, 0))


def _assign(model, plan: dict[str, list[tuple[str, object]]], state: dict[str, np.ndarray]) -> None:
    """``plan``: Keras layer name -> [(state key, transform)] in the order of the layer's weights."""
    used, assignments = set(), []
    for layer_name, items in plan.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise MismatchError(f"the model has no layer {layer_name}") from None
        if len(layer.weights) != len(items):
            raise MismatchError(f"layer {layer_name} has {len(layer.weights)} weights, the plan {len(items)}")
        values = []
        for weight, (key, fn) in zip(layer.weights, items):
            if key not in state:
                raise MismatchError(f"tensor {key} is missing")
            value = fn(state[key]) if fn else state[key]
            if tuple(value.shape) != tuple(weight.shape):
                raise MismatchError(f"{key} has shape {tuple(state[key].shape)}, which does not fit "
                                    f"{weight.path} {tuple(weight.shape)}")
            values.append(value.astype(np.float32))
            used.add(key)
        assignments.append((layer, values))
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise MismatchError(f"{len(unused)} tensor(s) have no place in the model, e.g. {unused[:3]}")
    for layer, values in assignments:
        layer.set_weights(values)


def _bn(prefix: str):
    return [(f"{prefix}.weight", None), (f"{prefix}.bias", None),
            (f"{prefix}.running_mean", None), (f"{prefix}.running_var", None)]


def efficientnet_lite0(model, state: dict[str, np.ndarray]) -> None:
    """The state dict of EfficientNet-PyTorch's naming (``_conv_stem``, ``_blocks.i._expand_conv``, ``_fc``)."""
    plan = {"stem_conv": [("_conv_stem.weight", _conv)], "stem_bn": _bn("_bn0")}
    index = 0
    for stage, (repeats, _, _, expand, _) in enumerate(LITE0_STAGES, start=1):
        for r in range(repeats):
            src, dst = f"_blocks.{index}", f"stage{stage}_block{r}"
            if expand != 1:
                plan[f"{dst}_expand_conv"] = [(f"{src}._expand_conv.weight", _conv)]
                plan[f"{dst}_expand_bn"] = _bn(f"{src}._bn0")
            plan[f"{dst}_dwconv"] = [(f"{src}._depthwise_conv.weight", _depthwise)]
            plan[f"{dst}_dw_bn"] = _bn(f"{src}._bn1")
            plan[f"{dst}_project_conv"] = [(f"{src}._project_conv.weight", _conv)]
            plan[f"{dst}_project_bn"] = _bn(f"{src}._bn2")
            index += 1
    plan["head_conv"] = [("_conv_head.weight", _conv)]
    plan["head_bn"] = _bn("_bn1")
    plan["logits"] = [("_fc.weight", _dense), ("_fc.bias", None)]
    _assign(model, plan, state)


CONVERTERS = {"efficientnet_lite0": efficientnet_lite0}
