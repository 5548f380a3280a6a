"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), as Fig. 1 of the paper draws it.

Fig. 1, for a 572x572 input tile and 2 classes:

- contracting path: ``depth`` = 4 times two unpadded 3x3 convolutions + ReLU, then 2x2 max pooling
  with stride 2, doubling the channels at each step (64, 128, 256, 512), then the bottom pair
  (1024);
- expansive path: 4 times a 2x2 up-convolution that halves the channels, concatenation with the
  correspondingly *cropped* feature map of the contracting path ("copy and crop": the unpadded
  convolutions lose a border), then two 3x3 convolutions + ReLU;
- a 1x1 convolution to the classes.

That is 23 convolutional layers (sec. 2), and the 572x572 tile gives a 388x388 map. Options beyond
the figure: ``padding="same"`` (the output has the input's size; no cropping is needed),
``base_filters``, ``depth`` and ``batch_norm`` (after every 3x3 convolution, before the ReLU),
``dropout``: the rate of the paper's "drop-out layers at the end of the contracting path" (sec. 3.1;
the authors' released Caffe model drops half the units after the deepest level's pair and after the
bottom pair, as this does; 0, the default, leaves them out), ``stem``: with ``stem = r`` > 1 each
r x r block of pixels becomes the channels of one position before the first level (space-to-depth:
nothing is lost, the levels run at 1/r of the size), and the last 1x1 convolution gives r*r*classes
logits per position that the periodic shuffle puts back at full resolution (Shi et al. 2016's
sub-pixel convolution): the full-resolution levels, whose few channels a CPU computes slowly, are
skipped; ``stem_skip = n`` (with a stem; without one, the full-resolution levels already give each
pixel its own features, and it does nothing) hands the sub-pixel convolution the pixel blocks
themselves and r*r*c*n learned ramps relu(w . block + b) of them beside the decoder's features, so
that each pixel's logits can threshold its own value (the skip the paper's full-resolution level
would give: outlines from 4x4 blocks are otherwise coarse), ``filters`` (the contracting levels' and
the bottom's widths, instead of base_filters doubling) and ``decoder_filters`` (the expansive
levels', top first, instead of mirroring the contracting path), and ``encoder``: a pretrained
network (``NAME:WEIGHTS`` such as ``efficientnet_lite0:imagenet`` or ``fashion_cnn:fashion_mnist``,
or a cnnctl run folder) whose feature maps at strides 2, 4, ...
(``cnnctl.models.backbone.pyramid_outputs``) replace the contracting path's levels, as in TernausNet
(Iglovikov & Shvets 2018) and the segmentation_models family; the segment task freezes it by
``finetune.freeze`` as ``cnnctl finetune`` does. Weights are drawn from a Gaussian with std
sqrt(2 / N), N the incoming nodes of a neuron (sec. 3, He initialisation).

Input: raw pixels in [0, 255], scaled to [0, 1] inside the model. Output: float32 logits.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import (
    DepthToSpace,
    FusedBatchNormalization,
    SpaceToDepth,
    StrideTwoConv2DTranspose,
)
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


def _conv_pair(x, filters: int, padding: str, batch_norm: bool, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding=padding, use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = FusedBatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _crop_to(skip, target, name: str):
    """Centre-crop ``skip`` (b, H, W, c) to ``target``'s spatial size (Fig. 1's "copy and crop")."""
    dh = int(skip.shape[1]) - int(target.shape[1])
    dw = int(skip.shape[2]) - int(target.shape[2])
    if dh == 0 and dw == 0:
        return skip
    return layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)), name=name)(skip)


def output_size(input_size: int, depth: int = 4) -> int:
    """The output side of a valid-padding U-Net for an input side: each 3x3 pair loses 4 pixels, each
    pooling halves (the side before it must be even), each up-convolution doubles."""
    side = input_size
    for _ in range(depth):
        side -= 4
        if side <= 0 or side % 2:
            raise ValueError(f"a {input_size}-pixel tile does not pool evenly at depth {depth}; "
                             "valid sizes are 572, 396, 188, ... (see unet.valid_input_sizes)")
        side //= 2
    side -= 4
    for _ in range(depth):
        side = side * 2 - 4
    if side <= 0:
        raise ValueError(f"a {input_size}-pixel tile is too small for depth {depth}")
    return side


def valid_input_sizes(limit: int = 1024, depth: int = 4) -> list[int]:
    """Tile sides up to ``limit`` that a valid-padding U-Net of this depth takes."""
    out = []
    for side in range(1, limit + 1):
        try:
            output_size(side, depth)
        except ValueError:
            continue
        out.append(side)
    return out


def output_side(input_side: int, padding: str = "valid", depth: int = 4, **_options) -> int:
    """The side of the label map the network gives for an input tile side (the segment task's tiling)."""
    return input_side if padding == "same" else output_size(input_side, depth)


def _encoder_levels(inputs, x, encoder: str, depth: int, base_filters: int, batch_norm: bool):
    """The contracting path from a pretrained network: -> (skips at levels 0..depth-1, the bottom map).

    Level 0 (full resolution) is a new conv pair on the scaled image ``x``, for exact boundaries; level k
    (stride 2^k) is the encoder's deepest map at that stride; levels the encoder lacks (a 28x28
    classifier stops at stride 4) are the paper's pool + conv pair. The encoder is one nested layer,
    ``encoder``, so that freeze modes name its own layers."""
    from cnnctl.models.backbone import pyramid_outputs
    from cnnctl.models.encoders import network_at

    h, w, c = (int(d) for d in inputs.shape[1:])
    net = network_at(encoder, (h, w), log=lambda *a: None)
    pyramid = pyramid_outputs(net)
    levels = [k for k in range(1, depth + 1) if f"P{k}" in pyramid]
    levels = levels[: next((i for i, k in enumerate(levels) if k != i + 1), len(levels))]   # contiguous 1..n
    if not levels:
        raise ValueError(f"{encoder} has no feature map at stride 2 to start a U-Net's levels")
    trunk = keras.Model(net.inputs[0], [pyramid[f"P{k}"] for k in levels], name="encoder")
    wants = int(net.inputs[0].shape[-1])
    raw = inputs
    if wants == 3 and c == 1:                                   # grey images into an RGB network
        raw = layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    elif wants != c:
        raise ValueError(f"{encoder} takes {wants}-channel images, the data has {c}")
    features = trunk(raw)
    features = features if isinstance(features, (list, tuple)) else [features]
    skips = [_conv_pair(x, base_filters, "same", batch_norm, "down1")] + list(features)
    x = skips.pop()                                              # the deepest encoder map
    for level in range(len(levels) + 1, depth + 1):              # levels the encoder lacks
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = _conv_pair(x, base_filters * 2**level, "same", batch_norm,
                       "bottom" if level == depth else f"down{level + 1}")
    return skips, x


@register("unet", task="segment", input_shape=(572, 572, 1), num_classes=2, output_side=output_side,
          paper="Ronneberger, Fischer & Brox, U-Net (MICCAI 2015), Fig. 1 and sec. 2-3")
def unet(num_classes: int = 2, input_shape=(572, 572, 1), base_filters: int = 64, depth: int = 4,
         padding: str = "valid", batch_norm: bool = False, encoder: str = "", stem: int = 1,
         dropout: float = 0.0, filters=(), decoder_filters=(), stem_skip: int = 0) -> keras.Model:
    """Fig. 1's network: (b, H, W, c) -> per-pixel class logits (b, H', W', num_classes)."""
    encoder_widths = [int(f) for f in filters] or [base_filters * 2**level for level in range(depth + 1)]
    if len(encoder_widths) != depth + 1:
        raise ValueError(f"filters names the contracting levels and the bottom: {depth + 1} numbers for depth "
                         f"{depth}, not {len(encoder_widths)}")
    decoder_widths = [int(f) for f in decoder_filters] or encoder_widths[:depth]
    if len(decoder_widths) != depth:
        raise ValueError(f"decoder_filters names the expansive levels, top first: {depth} numbers for depth "
                         f"{depth}, not {len(decoder_widths)}")
    if filters and encoder:
        raise ValueError("filters sets the contracting path's widths; a pretrained encoder has its own")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' (the paper) or 'same', not {padding!r}")
    if encoder and padding != "same":
        raise ValueError("a pretrained encoder pads its convolutions: use padding = 'same' with it")
    stem = int(stem)
    if stem < 1 or stem & (stem - 1):
        raise ValueError(f"stem must be 1, 2, 4, ... (pixels per block side), not {stem}")
    if stem > 1 and (padding != "same" or encoder):
        raise ValueError(f"stem = {stem} needs padding = 'same' and no encoder (an encoder reads the full-resolution "
                         "image itself): set model.stem = 1 with an encoder")
    h, w = int(input_shape[0]), int(input_shape[1])
    if padding == "valid":
        output_size(h, depth), output_size(w, depth)           # refuses sizes that do not pool evenly
    elif h % (stem * 2**depth) or w % (stem * 2**depth):
        raise ValueError(f"a same-padding U-Net of depth {depth} with stem {stem} needs sides divisible by "
                         f"{stem * 2**depth}, not {h}x{w}")
    inputs, x = pixel_input(tuple(input_shape), 0.0, 255.0, name="image")
    if stem > 1:
        x = SpaceToDepth(stem, name="stem")(x)                  # (b, H/r, W/r, r*r*c)
    blocks = x
    skips = []
    if encoder:
        skips, x = _encoder_levels(inputs, x, encoder, depth, base_filters, batch_norm)
    else:
        for level in range(depth):                              # contracting path
            x = _conv_pair(x, encoder_widths[level], padding, batch_norm, f"down{level + 1}")
            if dropout and level == depth - 1:                  # the end of the contracting path
                x = layers.Dropout(dropout, name=f"down{level + 1}_dropout")(x)
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level + 1}")(x)
        x = _conv_pair(x, encoder_widths[depth], padding, batch_norm, "bottom")
    if dropout:
        x = layers.Dropout(dropout, name="bottom_dropout")(x)
    for level in reversed(range(depth)):                        # expansive path
        width = decoder_widths[level]
        x = StrideTwoConv2DTranspose(width, 2, strides=2, kernel_initializer="he_normal",
                                   name=f"up{level + 1}_upconv")(x)
        skip = _crop_to(skips[level], x, f"up{level + 1}_crop")
        x = layers.Concatenate(name=f"up{level + 1}_concat")([skip, x])
        x = _conv_pair(x, width, padding, batch_norm, f"up{level + 1}")
    if stem > 1:                                                # r*r*classes per position -> (b, H, W, classes)
        if stem_skip:
            # the block's own pixels, as they are and through r*r*c * ``stem_skip`` learned ramps
            # relu(w . block + b), beside the features: each pixel's logits can threshold its own value
            # (b, H/r, W/r, r*r*c * (1 + stem_skip))
            ramps = layers.Conv2D(int(blocks.shape[-1]) * int(stem_skip), 1, name="stem_skip_ramps")(blocks)
            ramps = layers.ReLU(name="stem_skip_relu")(ramps)
            x = layers.Concatenate(name="stem_skip")([blocks, ramps, x])
        # the 1x1 convolution runs in the policy's precision (bfloat16 under mixed_bfloat16: as a
        # classifier's last Dense, whose softmax alone is float32); its r*r*classes logits are cast
        # to float32 by the shuffle (in float32 it was a visible share of a scene-recipe step).
        x = layers.Conv2D(num_classes * stem * stem, 1, name="subpixel_logits")(x)
        logits = DepthToSpace(stem, dtype="float32", name="logits")(x)
    else:
        logits = layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="unet")
