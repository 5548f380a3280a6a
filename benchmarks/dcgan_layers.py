"""Where DCGAN's training step spends its time: each convolution of dcgan-fashion alone, batch 128.

    python benchmarks/dcgan_layers.py [--seconds 2]

For G's two transposed convolutions and D's two strided convolutions (the layers of
``models.build("dcgan")`` at 28x28, width 64), times the forward pass alone, the forward pass with
the input gradient (fwd + dx) and with the weight gradient (fwd + dw), in float32 and in bfloat16
(the layer's dtype policy), each in one ``tf.function``: once as Keras' own layer
(``Conv2DTranspose`` / ``Conv2D``: TF's ``Conv2DBackpropInput`` for the transposed convolution and
for the input gradient) and once as cnnctl's (``StrideTwoConv2DTranspose`` / ``StrideTwoConv2D``:
the sub-pixel form, ``cnnctl/layers/stride_two_conv.py``), with the same weights. Prints a
markdown table of milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 128


def time_call(fn, x, seconds: float) -> float:
    fn(x)                                   # trace
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    import keras
    import tensorflow as tf

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    rows = []
    for dtype in ("float32", "bfloat16"):
        keras.config.set_dtype_policy(dtype)
        from cnnctl import models

        gan = models.build("dcgan", num_classes=0)
        ours = [gan.generator.get_layer("up1"), gan.generator.get_layer("to_image"),
                gan.discriminator.get_layer("down1"), gan.discriminator.get_layer("down2")]
        for layer in ours:
            base = keras.layers.Conv2DTranspose if isinstance(layer, keras.layers.Conv2DTranspose) else keras.layers.Conv2D
            plain = base.from_config(layer.get_config())
            plain.build(layer.input.shape)
            plain.set_weights(layer.get_weights())
            x = tf.cast(tf.random.normal((BATCH, *layer.input.shape[1:])), dtype)
            for impl in (plain, layer):
                def fwd(x, impl=impl):
                    return impl(x)

                def dx(x, impl=impl):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = tf.reduce_sum(tf.cast(impl(x), tf.float32) ** 2)
                    return tape.gradient(y, x)

                def dw(x, impl=impl):
                    with tf.GradientTape() as tape:
                        y = tf.reduce_sum(tf.cast(impl(x), tf.float32) ** 2)
                    return tape.gradient(y, impl.kernel)

                shapes = f"{tuple(layer.input.shape[1:])} -> {tuple(layer.output.shape[1:])}"
                rows.append((f"{layer.name} {shapes}", type(impl).__name__, dtype, time_call(tf.function(fwd), x, a.seconds),
                             time_call(tf.function(dx), x, a.seconds), time_call(tf.function(dw), x, a.seconds)))
    print(f"\nDCGAN layers at batch {BATCH}, milliseconds per call, {os.cpu_count()} CPU cores\n")
    print("| layer | implementation | dtype | forward | forward + dx | forward + dw |")
    print("|---|---|---|---:|---:|---:|")
    for name, impl, dtype, f, x_, w in rows:
        print(f"| {name} | {impl} | {dtype} | {f:.1f} | {x_:.1f} | {w:.1f} |")


if __name__ == "__main__":
    main()
