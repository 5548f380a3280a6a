"""Process-wide TensorFlow set-up, in one place: devices, strategy, precision, determinism.

``configure`` must run before TensorFlow executes its first op (logical
devices cannot be changed afterwards), so commands call it first.
"""

from __future__ import annotations

import dataclasses
import json
import os

from cnnctl.errors import CnnctlError


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16, where mixed_bfloat16 is faster than float32."""
    flags = _cpuinfo()
    return " amx_bf16" in flags or " avx512_bf16" in flags


def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX tiles for bfloat16 (Intel Xeon since Sapphire Rapids): oneDNN's bfloat16
    kernels there accumulate in another order than AVX512-BF16's, so bf16 results differ in the last bits."""
    return " amx_bf16" in _cpuinfo()


def resolve_precision(precision: str, model: str = "", mode: str = "train", log=None, measure: bool = True) -> str:
    """The policy ``precision`` means for ``model`` here (see ``explain_precision``)."""
    return explain_precision(precision, model, mode, log, measure)[0]


def explain_precision(precision: str, model: str = "", mode: str = "train", log=None,
                      measure: bool = True) -> tuple[str, str]:
    """-> (policy, why). ``auto``: mixed_float16 on GPUs; on CPUs without bf16 units float32; on CPUs with
    them, the faster of float32 and mixed_bfloat16 as measured on ``model`` in ``mode`` ("train" or
    "infer") by ``cnnctl.train.calibrate`` (once per CPU, cached; ``log`` hears when it measures). A
    model that cannot be measured generically (GANs, detectors) falls back to its registry entry:
    float32 where ``cpu_bf16_slower`` records a slower bf16, otherwise mixed_bfloat16; so does every
    model when ``measure`` is False (a multi-worker job: every worker must choose the same policy,
    whatever its own CPU or cache says)."""
    if precision != "auto":
        return precision, "asked for"
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", "auto: a GPU"
    if not cpu_has_fast_bf16():
        return "float32", "auto: this CPU has no bf16 units"
    from cnnctl.models import MODELS

    if measure and model in MODELS.names():
        from cnnctl.train.calibrate import measured_policy

        entry = measured_policy(model, mode, log)
        if entry is not None:
            ratio = entry["float32"] / entry["mixed_bfloat16"]
            return entry["policy"], (f"auto: measured on this CPU, {model} {mode}s at {ratio:.2f}x "
                                     "float32's speed in bfloat16")
    slower = _bf16_slower_on_cpu(model)
    if slower:
        return "float32", f"auto: for {model}, {slower}"
    return "mixed_bfloat16", "auto: this CPU has bf16 units"


def _bf16_slower_on_cpu(model: str) -> str:
    from cnnctl.models import MODELS

    return MODELS.get(model).meta.get("cpu_bf16_slower", "") if model in MODELS.names() else ""


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


def configure(precision: str, deterministic: bool, seed: int, devices: int, strategy: str = "default",
              cluster: str = "tf_config", model: str = "", log=None) -> str:
    """Set devices, mixed precision policy, seeds and op determinism -> the precision in force.

    A multi-worker strategy is made first of all (see ``start_multiworker``).
    """
    import keras
    import tensorflow as tf

    if wants_multiworker(strategy, cluster):
        start_multiworker(devices, cluster)
    configure_devices(devices)
    policy = resolve_precision(precision, model, "train", log, measure=not wants_multiworker(strategy, cluster))
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # the switch is process-wide: a later run in the same process (tests, notebooks) must not inherit it
        from tensorflow.python.framework import (
            config as tf_config,  # no public off switch in TF 2.21
        )

        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()
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


@dataclasses.dataclass(frozen=True)
class ClusterPlace:
    """This process's place in a training job: how many processes, its rank, whether it is the chief."""

    size: int = 1
    rank: int = 0
    chief: bool = True


def cluster_place(cluster: str = "tf_config") -> ClusterPlace:
    """Read the job's layout from TF_CONFIG, or from Slurm's variables (``--cluster slurm``, under srun).

    The chief is TF_CONFIG's ``chief`` task if it has one, else worker 0 (TensorFlow's rule), and
    Slurm's task 0. Only the chief writes the run directory.
    """
    if cluster == "slurm":
        try:
            rank = int(os.environ["SLURM_PROCID"])
            size = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ["SLURM_NTASKS"])
        except (KeyError, ValueError):
            raise CnnctlError("--cluster slurm needs SLURM_PROCID and SLURM_STEP_NUM_TASKS (or SLURM_NTASKS)",
                              hint="start one task per worker with `srun cnnctl train --cluster slurm ...` "
                                   "inside an allocation (docs/scale-out.md)") from None
        return ClusterPlace(size, rank, rank == 0)
    if cluster != "tf_config":
        raise CnnctlError(f"unknown cluster {cluster!r}", hint="choose tf_config (TF_CONFIG) or slurm")
    conf = _tf_config()
    members = conf.get("cluster", {})
    size = len(members.get("worker", [])) + len(members.get("chief", []))
    if size <= 1:
        return ClusterPlace(max(size, 1))
    task = conf.get("task", {})
    rank = int(task.get("index", 0))
    chief = task.get("type") == "chief" if "chief" in members else task.get("type") == "worker" and rank == 0
    return ClusterPlace(size, rank, chief)


def wants_multiworker(kind: str, cluster: str = "tf_config") -> bool:
    return kind == "multiworker" or (kind == "auto" and (cluster == "slurm" or cluster_place(cluster).size > 1))


# One strategy per device set and process: a second MirroredStrategy in the same process (the
# two stages of `finetune --stages`) reused the collective instance keys of the first and its
# gradient all-reduce failed with "Shape mismatch in the collective instance".
_STRATEGIES: dict = {}


def _slurm_resolver():
    """Slurm's layout as a cluster resolver; ports from CNNCTL_PORT_BASE (default 8888) up, one per task on a node."""
    import shutil

    import tensorflow as tf

    port_base = int(os.environ.get("CNNCTL_PORT_BASE", "8888"))
    if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
        gpu_options = {}   # the resolver counts the node's GPUs and hands each task its share
    else:
        # A CPU node: the resolver would ask nvidia-smi (absent) for a GPU count, and with 0 GPUs
        # it divides by zero. One notional device per task, and CUDA_VISIBLE_DEVICES left alone.
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
        gpu_options = {"gpus_per_node": tasks, "gpus_per_task": 1, "auto_set_gpu": False}
    try:
        return tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port_base, **gpu_options)
    except (RuntimeError, ValueError) as e:
        raise CnnctlError(f"cannot read the Slurm job's layout: {e}",
                          hint="start one task per worker with `srun cnnctl train --cluster slurm ...`") from None


def start_multiworker(devices: int = 1, cluster: str = "tf_config"):
    """Make the process's MultiWorkerMirroredStrategy; it must come before any other TensorFlow op.

    TensorFlow configures collective ops when its runtime starts, so the strategy has to exist
    before the first op or device query ("Collective ops must be configured at program startup").
    On CPUs it all-reduces with rings over gRPC; on GPUs with NCCL.
    """
    if "multiworker" in _STRATEGIES:
        return _STRATEGIES["multiworker"]
    if cluster == "tf_config" and not os.environ.get("TF_CONFIG"):
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
    resolver = _slurm_resolver() if cluster == "slurm" else None
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    except RuntimeError as e:  # TensorFlow ran ops before the strategy was made (a bug in cnnctl)
        raise CnnctlError(f"multi-worker training could not start: {e}",
                          hint="start each worker as a fresh `cnnctl train` process "
                               "(`cnnctl launch --workers N -- train ...` does)") from None
    except tf.errors.UnknownError as e:  # "Could not start gRPC server": this worker's port is taken
        raise CnnctlError(f"this worker could not listen on its address in the cluster ({str(e).splitlines()[0]})",
                          hint="the port is probably in use: pick free ports in TF_CONFIG "
                               "(or `cnnctl launch --port P`, or leave --port out)") from None
    from cnnctl.train import keras_multiworker

    if not keras_multiworker.apply():
        import keras

        raise CnnctlError(f"multi-worker training needs Keras 3.15's TensorFlow trainer; this is Keras {keras.__version__}",
                          hint='install the pinned versions: pip install -e "."')
    _STRATEGIES["multiworker"] = strategy
    return strategy


def start_cluster_first(train_cfg) -> bool:
    """For commands that touch TensorFlow before the engine (finetune loads its backbone): make the
    multi-worker strategy now, if the recipe and environment ask for one. True for the chief (and
    for every single-process run): only the chief should print."""
    if not wants_multiworker(train_cfg.strategy, train_cfg.cluster):
        return True
    start_multiworker(train_cfg.devices, train_cfg.cluster)
    return cluster_place(train_cfg.cluster).chief


def pick_strategy(kind: str, cluster: str = "tf_config"):
    """The one place a ``tf.distribute`` strategy is chosen.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy when more than one GPU (or logical CPU device) is
    visible, else the default strategy.
    """
    if wants_multiworker(kind, cluster):  # before any device query: see start_multiworker
        return start_multiworker(cluster=cluster)
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
