"""Process-wide TensorFlow set-up, in one place: devices, strategy, precision, determinism.

``configure`` must run before TensorFlow executes its first op (logical
devices cannot be changed afterwards), so commands call it first.
"""

from __future__ import annotations

import json
import os

from cnnctl.errors import CnnctlError


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16, where mixed_bfloat16 is faster than float32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> mixed_float16 on GPUs, mixed_bfloat16 on CPUs with bf16 units, else float32."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_fast_bf16() else "float32"


def configure_devices(devices: int) -> None:
    """Split the CPU into ``devices`` logical devices (so MirroredStrategy can run on one CPU)."""
    import tensorflow as tf

    if devices <= 1 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < devices:
            raise CnnctlError(f"cannot split the CPU into {devices} devices after TensorFlow started "
                              f"(it has {have})", hint="pass --devices on the command line") from None


def configure(precision: str, deterministic: bool, seed: int, devices: int) -> str:
    """Set devices, mixed precision policy, seeds and op determinism -> the precision in force."""
    import keras
    import tensorflow as tf

    configure_devices(devices)
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return policy


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        return len(json.loads(raw).get("cluster", {}).get("worker", []))
    except (ValueError, AttributeError):
        raise CnnctlError("TF_CONFIG is not valid JSON",
                          hint='e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                               '"task": {"type": "worker", "index": 0}}') from None


# One strategy per device set and process: a second MirroredStrategy in the same process (the
# two stages of `finetune --stages`) reused the collective instance keys of the first and its
# gradient all-reduce failed with "Shape mismatch in the collective instance".
_STRATEGIES: dict = {}


def pick_strategy(kind: str):
    """The one place a ``tf.distribute`` strategy is chosen.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy when more than one GPU (or logical CPU device) is
    visible, else the default strategy.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto":
        if _tf_config_workers() > 1:
            kind = "multiworker"
        elif len(gpus) > 1 or (not gpus and len(cpus) > 1):
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        devices = tuple(d.name for d in (gpus or cpus))
        if devices not in _STRATEGIES:
            _STRATEGIES[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
        return _STRATEGIES[devices]
    if kind == "multiworker":
        if _tf_config_workers() < 1:
            raise CnnctlError("--strategy multiworker needs TF_CONFIG describing the cluster",
                              hint='set TF_CONFIG={"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}')
        if "multiworker" not in _STRATEGIES:
            try:
                _STRATEGIES["multiworker"] = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as e:  # TensorFlow ran ops before the strategy was made
                raise CnnctlError(
                    f"multi-worker training does not work in this version of cnnctl ({e})",
                    hint="train on one machine: unset TF_CONFIG (or pass --strategy mirrored / default); "
                         "multi-worker support is being built (docs/scale-out.md)") from None
        return _STRATEGIES["multiworker"]
    raise CnnctlError(f"unknown strategy {kind!r}", hint="choose auto, default, mirrored or multiworker")
