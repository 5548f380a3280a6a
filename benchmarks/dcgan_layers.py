"""Where DCGAN's training step spends its time: each convolution of dcgan-fashion alone, batch 128.

    python benchmarks/dcgan_layers.py [--seconds 2]

For G's two transposed convolutions and D's two strided convolutions (the layers of
``models.build("dcgan")`` at 28x28, width 64), times the forward pass alone, the forward pass with
the input gradient (fwd + dx) and with the weight gradient (fwd + dw), in float32 and in bfloat16 (the layer's dtype policy), each in one
``tf.function``. Also D's second convolution recast as space-to-depth + a 2x2 stride-1 convolution
(the same function: the 4x4 kernel regrouped), to see whether the stride is what makes its
gradients slow. Prints a markdown table of milliseconds per call.
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


def space_to_depth_conv(x, kernel):
    """A 4x4 stride-2 SAME convolution (even input sides) as pad 1 -> space-to-depth 2 -> 2x2 VALID."""
    import tensorflow as tf

    c, f = kernel.shape[2], kernel.shape[3]
    k = tf.reshape(tf.transpose(tf.reshape(kernel, (2, 2, 2, 2, c, f)), (0, 2, 1, 3, 4, 5)), (2, 2, 4 * c, f))
    x = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 2)
    return tf.nn.conv2d(x, k, 1, "VALID")


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
        layers = [gan.generator.get_layer("up1"), gan.generator.get_layer("to_image"),
                  gan.discriminator.get_layer("down1"), gan.discriminator.get_layer("down2")]
        for layer in layers:
            x = tf.cast(tf.random.normal((BATCH, *layer.input.shape[1:])), dtype)

            def fwd(x, layer=layer):
                return layer(x)

            def dx(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.reduce_sum(tf.cast(layer(x), tf.float32) ** 2)
                return tape.gradient(y, x)

            def dw(x, layer=layer):
                with tf.GradientTape() as tape:
                    y = tf.reduce_sum(tf.cast(layer(x), tf.float32) ** 2)
                return tape.gradient(y, layer.kernel)

            t_fwd = time_call(tf.function(fwd), x, a.seconds)
            t_dx = time_call(tf.function(dx), x, a.seconds)
            t_dw = time_call(tf.function(dw), x, a.seconds)
            shapes = f"{tuple(layer.input.shape[1:])} -> {tuple(layer.output.shape[1:])}"
            rows.append((f"{layer.name} ({type(layer).__name__} {shapes})", dtype, t_fwd, t_dx, t_dw))
        down2 = layers[3]
        kernel = tf.cast(down2.kernel, dtype)
        x = tf.cast(tf.random.normal((BATCH, *down2.input.shape[1:])), dtype)
        plain = tf.function(lambda x, k=kernel: tf.nn.conv2d(x, k, 2, "SAME"))
        recast = tf.function(lambda x, k=kernel: space_to_depth_conv(x, k))
        diff = float(tf.reduce_max(tf.abs(tf.cast(plain(x), tf.float32) - tf.cast(recast(x), tf.float32))))

        def recast_grads(x, k=kernel):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([x, k])
                y = tf.reduce_sum(tf.cast(space_to_depth_conv(x, k), tf.float32) ** 2)
            return tape.gradient(y, [x, k])

        def plain_grads(x, k=kernel):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([x, k])
                y = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 2, "SAME"), tf.float32) ** 2)
            return tape.gradient(y, [x, k])

        rows.append((f"down2 forward + dx + dw, as is (max difference of the recast's output: {diff:.1e})",
                     dtype, time_call(tf.function(plain_grads), x, a.seconds), None, None))
        rows.append(("down2 forward + dx + dw, recast as space-to-depth + 2x2 conv", dtype,
                     time_call(tf.function(recast_grads), x, a.seconds), None, None))
    print(f"\nDCGAN layers at batch {BATCH}, milliseconds per call, {os.cpu_count()} CPU cores\n")
    print("| layer | dtype | forward | forward + dx | forward + dw |")
    print("|---|---|---:|---:|---:|")
    for name, dtype, f, x_, w in rows:
        cells = ["" if v is None else f"{v:.1f}" for v in (x_, w)]
        print(f"| {name} | {dtype} | {f:.1f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
