"""Every export format of a trained classifier, run in its own runtime on real images.

    python benchmarks/export.py [--run checkpoints/bench-scale-out/one] [--images 1000]
                                [--out checkpoints/bench-export]

RUN defaults to the default recipe's 1-epoch run that ``benchmarks/scale_out.py`` writes (fashion_cnn
on Fashion-MNIST). Each format is written with ``cnnctl export RUN --format F`` and run on the first
``--images`` Fashion-MNIST test images (uint8, real): the SavedModel by TensorFlow's loader, ONNX by
onnxruntime, LiteRT by the ai-edge-litert interpreter, .keras by Keras. The table: file size, the
largest absolute difference from the run's own Keras model's probabilities, and how many top-1
classes agree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

FORMATS = {"savedmodel": "model", "onnx": "model.onnx", "litert": "model.tflite", "keras": "model.keras"}


def run_format(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    if fmt == "savedmodel":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return np.concatenate([serve(images=tf.constant(images[s:s + 256]))["probabilities"].numpy()
                               for s in range(0, len(images), 256)])
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        return runner(images=images)["probabilities"]
    import keras

    return np.asarray(keras.models.load_model(path, safe_mode=True).predict(images, verbose=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("checkpoints/bench-scale-out/one"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("checkpoints/bench-export"))
    args = ap.parse_args()
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.inference import load_keras_file, softmax

    images = fashion_mnist("")["test"].images[: args.images]
    which = "best" if (args.run / "best.keras").is_file() else "model"
    model = load_keras_file(args.run / f"{which}.keras", hint="")
    reference = softmax(np.asarray(model.predict(images.astype("float32"), verbose=0), np.float64))
    rows = []
    for fmt, name in FORMATS.items():
        path = args.out / name
        subprocess.run([sys.executable, "-m", "cnnctl", "export", str(args.run), "--format", fmt, "--out", str(path)],
                       check=True)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        probs = run_format(fmt, path, images)
        rows.append((fmt, size / 1e6, float(np.abs(probs - reference).max()),
                     float((probs.argmax(1) == reference.argmax(1)).mean())))
    print(f"\n{args.run} ({which}.keras), {len(images)} Fashion-MNIST test images, uint8 in:")
    print("| format | runtime | size | max abs difference from Keras | top-1 agreement |")
    print("|---|---|---:|---:|---:|")
    runtimes = {"savedmodel": "tf.saved_model.load", "onnx": "onnxruntime", "litert": "ai-edge-litert", "keras": "Keras"}
    for fmt, mb, diff, agree in rows:
        print(f"| {fmt} | {runtimes[fmt]} | {mb:.2f} MB | {diff:.1e} | {100 * agree:.1f}% |")


if __name__ == "__main__":
    main()
