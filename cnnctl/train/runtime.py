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


def configure(precision: str, deterministic: bool, seed: int, devices: int, strategy: str = "default") -> str:
    """Set devices, mixed precision policy, seeds and op determinism -> the precision in force.

    A multi-worker strategy is made first of all (see ``start_multiworker``).
    """
    import keras
    import tensorflow as tf

    if wants_multiworker(strategy):
        start_multiworker(devices)
    configure_devices(devices)
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return policy


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("cluster", {}), dict):
        raise CnnctlError("TF_CONFIG is not valid JSON of a cluster",
                          hint='e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                               '"task": {"type": "worker", "index": 0}}')
    return parsed


def _tf_config_workers() -> int:
    """How many training processes TF_CONFIG names (its workers and its chief, if it has one)."""
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster.

    The chief is the ``chief`` task if TF_CONFIG has one, else worker 0 (TensorFlow's rule).
    Only the chief writes the run directory; the others write theirs to a temporary folder.
    """
    conf = _tf_config()
    if _tf_config_workers() <= 1:
        return True
    task = conf.get("task", {})
    if "chief" in conf.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def wants_multiworker(kind: str) -> bool:
    return kind == "multiworker" or (kind == "auto" and _tf_config_workers() > 1)


# One strategy per device set and process: a second MirroredStrategy in the same process (the
# two stages of `finetune --stages`) reused the collective instance keys of the first and its
# gradient all-reduce failed with "Shape mismatch in the collective instance".
_STRATEGIES: dict = {}


def start_multiworker(devices: int = 1):
    """Make the process's MultiWorkerMirroredStrategy; it must come before any other TensorFlow op.

    TensorFlow configures collective ops when its runtime starts, so the strategy has to exist
    before the first op or device query ("Collective ops must be configured at program startup").
    On CPUs it all-reduces with rings over gRPC; on GPUs with NCCL.
    """
    if "multiworker" in _STRATEGIES:
        return _STRATEGIES["multiworker"]
    workers = _tf_config_workers()
    if workers < 1:
        raise CnnctlError("--strategy multiworker needs TF_CONFIG describing the cluster",
                          hint='set TF_CONFIG={"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}, '
                               "or start local workers with `cnnctl launch --workers N -- train ...`")
    if devices > 1:
        raise CnnctlError(f"--devices {devices} splits one CPU for MirroredStrategy; it does not combine with "
                          "multi-worker training", hint="drop --devices (each worker is one replica on a CPU)")
    import tensorflow as tf

    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                      if tf.config.list_physical_devices("GPU") else
                      tf.distribute.experimental.CommunicationImplementation.RING)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    except RuntimeError as e:  # TensorFlow ran ops before the strategy was made (a bug in cnnctl)
        raise CnnctlError(f"multi-worker training could not start: {e}",
                          hint="start each worker as a fresh `cnnctl train` process "
                               "(`cnnctl launch --workers N -- train ...` does)") from None
    from cnnctl.train import keras_multiworker

    if not keras_multiworker.apply():
        import keras

        raise CnnctlError(f"multi-worker training needs Keras 3.15's TensorFlow trainer; this is Keras {keras.__version__}",
                          hint='install the pinned versions: pip install -e "."')
    _STRATEGIES["multiworker"] = strategy
    return strategy


def pick_strategy(kind: str):
    """The one place a ``tf.distribute`` strategy is chosen.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy when more than one GPU (or logical CPU device) is
    visible, else the default strategy.
    """
    if wants_multiworker(kind):  # before any device query: see start_multiworker
        return start_multiworker()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 or (not gpus and len(cpus) > 1) else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        devices = tuple(d.name for d in (gpus or cpus))
        if devices not in _STRATEGIES:
            _STRATEGIES[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
        return _STRATEGIES[devices]
    raise CnnctlError(f"unknown strategy {kind!r}", hint="choose auto, default, mirrored or multiworker")
