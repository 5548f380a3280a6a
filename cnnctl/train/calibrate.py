"""``--precision auto`` on a CPU with bf16 units, by measurement: float32 against mixed_bfloat16 on the
model itself, once per CPU model, TensorFlow version, model and mode; the result is cached.

bfloat16 is not faster for every network on these CPUs: ResNet-50 trains 1.77x faster in bf16 here,
EfficientNet-Lite0 0.67x (its depthwise gradients and ReLU6 take slow oneDNN paths in bf16; see
docs/speed.md). So ``auto`` times a few steps of each policy, interleaved, and keeps the faster.

What is timed (``time_policies``):
- ``train``: one SGD step of the registered architecture at its default input size (every layer
  trained; loss: the mean square of its outputs, which exercises the same forward and backward
  kernels as the task's loss), ``batch`` images;
- ``infer``: the model's traced inference function (``cnnctl.inference``), ``batch`` images.
Each policy is built, traced and warmed up, then the two are timed alternately, ``steps`` each; the
medians decide: bf16 only if its median is below float32's, so ``auto`` never picks a policy
measured slower than float32.

The cache is ``$CNNCTL_CACHE/precision.json`` (default ``~/.cache/cnnctl``), one entry per key
``cpu | tf version | model | mode``, holding both timings (or ``{"unmeasurable": why}`` for a model
without symbolic inputs, which the registry rule decides). Delete it to measure again.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

POLICIES = ("float32", "mixed_bfloat16")
_MEMO: dict[str, dict | None] = {}       # key -> entry, for this process (a read-only cache still measures once)


class Unmeasurable(Exception):
    """A model ``time_policies`` cannot drive generically (no symbolic inputs: GANs, detectors)."""


def cache_file() -> Path:
    root = Path(os.environ.get("CNNCTL_CACHE") or Path.home() / ".cache" / "cnnctl")
    return root / "precision.json"


def cpu_name() -> str:
    """The CPU's model name and its bf16 flags, e.g. "AMD EPYC (avx512_bf16)"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = [f for f in ("amx_bf16", "avx512_bf16") if f" {f}" in text]
    return f"{name} ({', '.join(flags) or 'no bf16 flags'})"


def cache_key(model: str, mode: str) -> str:
    import tensorflow as tf

    return f"{cpu_name()} | tf {tf.__version__} | {model} | {mode}"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}               # absent or damaged: measured again, then rewritten


def _write_cache(key: str, entry: dict) -> None:
    from cnnctl.files import atomic_write_text

    data = _read_cache()
    data[key] = entry
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file(), json.dumps(data, indent=1, sort_keys=True))
    except (OSError, CnnctlError):
        pass                    # a read-only cache costs a measurement next time, nothing else


def default_batch(input_shape) -> int:
    """About 8 images' worth of 224x224 pixels, between 1 and 32: MNIST and CIFAR sizes at 32, 224 at 8,
    U-Net's 572 at 1 (a bf16-to-float32 ratio, not a throughput: this keeps ResNet-50's measurement
    within about half a minute here)."""
    return max(1, min(32, round(8 * 224 * 224 / (input_shape[0] * input_shape[1]))))


def time_policies(model: str, mode: str, batch: int | None = None, steps: int = 3) -> dict:
    """Seconds per step of ``model`` in ``mode`` ("train" or "infer") for each policy -> the cache entry:
    {"float32": s, "mixed_bfloat16": s, "policy": the faster, "batch", "input_shape", "steps"}."""
    import keras
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.inference import inference_function

    if mode not in ("train", "infer"):
        raise ValueError(f"mode {mode!r}: train or infer")
    shape = models.default_input_shape(model)
    batch = batch or default_batch(shape)
    before = keras.mixed_precision.global_policy().name
    names = _name_counters()
    rng = np.random.default_rng(0)
    steps_of = {}
    built = []
    try:
        for policy in POLICIES:
            keras.mixed_precision.set_global_policy(policy)
            net = models.build(model, num_classes=10, input_shape=shape)
            built.append(net)
            inputs = getattr(net, "inputs", None)
            if not inputs:
                raise Unmeasurable(f"{model} has no symbolic inputs")
            # a free axis (a caption's word count) is timed at 16
            sizes = [(batch, *(16 if d is None else d for d in i.shape[1:])) for i in inputs]
            xs = [tf.constant(rng.uniform(0, 255, size).astype("float32")) if i.dtype.startswith("float")
                  else tf.zeros(size, i.dtype) for i, size in zip(inputs, sizes)]
            steps_of[policy] = _inference_step(inference_function(net), xs) if mode == "infer" \
                else _training_step(net, xs)
            steps_of[policy]()              # trace and warm up
            steps_of[policy]()
        times = {p: [] for p in POLICIES}
        for _ in range(steps):              # interleaved, so a slow moment hits both
            for policy in POLICIES:
                t = time.perf_counter()
                steps_of[policy]()
                times[policy].append(time.perf_counter() - t)
    finally:
        keras.mixed_precision.set_global_policy(before)
        _restore_name_counters(names)
        from cnnctl.inference import _TRACED

        for net in built:                   # the measured networks are not kept for the process
            _TRACED.pop(net, None)
    med = {p: statistics.median(ts) for p, ts in times.items()}
    faster = "mixed_bfloat16" if med["mixed_bfloat16"] < med["float32"] else "float32"
    return {**med, "policy": faster, "batch": batch, "input_shape": list(shape), "steps": steps,
            "measured": time.strftime("%Y-%m-%d")}


def _name_counters():
    """Keras' per-prefix layer-name counters ("conv2d_3"): the models built to measure must not shift the
    names of the run's own model (a fresh run that measured and its resume that did not would differ)."""
    try:
        from keras.src.backend.common import global_state

        return dict(global_state.get_global_attribute("object_name_uids", {}) or {})
    except (ImportError, AttributeError):
        return None


def _restore_name_counters(counters) -> None:
    if counters is None:
        return
    import collections

    from keras.src.backend.common import global_state

    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int, counters))


def _inference_step(forward, xs):
    def step():
        for out in _flat(forward(*xs)):
            np.asarray(out)             # wait for the result, as a command does
    return step


def _training_step(net, xs):
    import keras
    import tensorflow as tf

    opt = keras.optimizers.SGD(0.001)
    variables = net.trainable_variables

    @tf.function
    def step(*inputs):
        with tf.GradientTape() as tape:
            out = net(list(inputs) if len(inputs) > 1 else inputs[0], training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(o, tf.float32))) for o in _flat(out)])
        opt.apply(tape.gradient(loss, variables), variables)
        return loss

    return lambda: float(step(*xs))


def _flat(out) -> list:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def measured_policy(model: str, mode: str, log=None) -> dict | None:
    """The cached measurement of ``model`` in ``mode`` on this CPU, measuring it now if absent; None for
    a model that cannot be measured generically."""
    key = cache_key(model, mode)
    if key in _MEMO:
        return _MEMO[key]
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and "unmeasurable" in entry:     # known: the rule decides, nothing to build
        _MEMO[key] = None
        return None
    if not (isinstance(entry, dict) and entry.get("policy") in POLICIES):
        if log:
            log(f"choosing the precision of {model} ({mode}): timing float32 against mixed_bfloat16 on this "
                f"CPU, once (cached in {cache_file()})")
        try:
            entry = time_policies(model, mode)
        except Unmeasurable as e:
            if log:
                log(f"{e}, so it cannot be timed generically; the precision follows the rule instead")
            _write_cache(key, {"unmeasurable": str(e)})
            _MEMO[key] = None
            return None
        except Exception as e:  # noqa: BLE001 - the rule decides instead; a measurement never stops a run
            if log:
                log(f"could not time {model} ({type(e).__name__}: {e}); the precision follows the rule instead")
            return None
        _write_cache(key, entry)
    _MEMO[key] = entry
    return entry

