"""Does AlexNet start learning on Fashion-MNIST at 67x67? Short probes of initialisation x learning rate.

    python benchmarks/alexnet_init.py

Each probe (its own process) builds ``alexnet`` at 67x67x1 with ``kernel_init`` (``paper`` = N(0, 0.01),
or a Keras initializer), trains 150 steps of batch 128 (one pass over the first 19,200 training
images) with SGD momentum 0.9 and weight decay 5e-4 as the alexnet-fashion recipe, and tests on the
first 2,000 test images. It is how the recipe's He-normal kernels at lr 0.001 were chosen
(docs/classification.md#recipes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBES = [("paper", 0.01, "mixed_bfloat16"), ("paper", 0.01, "float32"), ("paper", 0.001, "mixed_bfloat16"),
          ("he_normal", 0.003, "mixed_bfloat16"), ("he_normal", 0.001, "mixed_bfloat16"),
          ("he_uniform", 0.001, "mixed_bfloat16"), ("glorot_uniform", 0.01, "mixed_bfloat16")]


def probe(init: str, lr: float, precision: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.tasks.classify import compile_model

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    splits = fashion_mnist()

    def arrays(split, n):
        images = tf.image.resize(splits[split].images[:n].astype("float32"), (67, 67)).numpy()
        return images, keras.ops.one_hot(splits[split].labels[:n], 10)

    model = models.build("alexnet", num_classes=10, input_shape=(67, 67, 1), kernel_init=init)
    compile_model(model, keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4), 10)
    x, y = arrays("train", 19_200)
    history = model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=True)
    result = model.evaluate(*arrays("test", 2_000), verbose=0, return_dict=True)
    return {"train_loss": history.history["loss"][-1], "test_accuracy": result["accuracy"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print("RESULT " + json.dumps(probe(*json.loads(sys.argv[2]))))
        return
    print("| kernel init | lr | precision | mean training loss | test accuracy (2,000) |")
    print("|---|---:|---|---:|---:|")
    for init, lr, precision in PROBES:
        p = subprocess.run([sys.executable, __file__, "--one", json.dumps([init, lr, precision])],
                           check=False, capture_output=True, text=True)
        line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"| {init} | {lr} | {precision} | failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:80]} | |")
            continue
        r = json.loads(line[7:])
        print(f"| {init} | {lr} | {precision} | {r['train_loss']:.3f} | {100 * r['test_accuracy']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
