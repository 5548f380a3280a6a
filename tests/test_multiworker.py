"""Multi-worker training for real: 2 local worker processes under MultiWorkerMirroredStrategy
(`cnnctl launch`), their steps against one process's, chief-only writing, and a worker
killed with SIGKILL mid-epoch: a clean stop, then a resume that ends bit-identical."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _cnnctl(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _weights(path: Path):
    import keras

    import cnnctl.models
    import cnnctl.train.optim  # noqa: F401  (and the optimizers a .keras file names)
    return [v.numpy() for v in keras.models.load_model(path, safe_mode=True).weights]


def _env(tmp_path: Path) -> dict:
    """A private TMPDIR, so that the test can see the non-chief worker's scratch folder go."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch)}


def _scratch_left(tmp_path: Path) -> list[str]:
    return [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("cnnctl-")]


# LeNet-5 has no batch norm: with it, each worker would normalise its half batch alone and the
# two runs would differ by design. Plain SGD at a constant rate: the step is the gradient.
SMALL = ["--precision", "float32", "--batch-size", "8", "--model", "lenet5", "--set", "data.val_split=0",
         "--set", "optimizer.name=sgd", "--set", "optimizer.lr=0.05", "--set", "schedule.name=constant",
         "--deterministic"]


def test_two_workers_take_the_steps_of_one_process_and_only_the_chief_writes(make_folder, tmp_path):
    data = make_folder(classes=2, per_class=16)           # 32 images: 4 global steps of 8
    out = tmp_path / "runs"
    env = _env(tmp_path)
    common = ["--data", data, "--epochs", "1", "--out-dir", out, *SMALL]
    one = _cnnctl("train", *common, "--name", "one", "--strategy", "default", env=env)
    text, _ = one.communicate(timeout=300)
    assert one.returncode == 0, text
    two = _cnnctl("launch", "--workers", "2", "--", "train", *common, "--name", "two", env=env)
    text, _ = two.communicate(timeout=600)
    assert two.returncode == 0, text
    assert "2 workers x 1 replica(s) x 4" in text and "sharded by example" in text, text
    assert "[w0] " in text and "Traceback" not in text

    # The same 4 steps: each worker's gradient is the mean over its 4 images, halved by Keras'
    # loss scaling and summed by the all-reduce, against one mean over 8. Only the order of
    # float32 sums differs (~1e-7 relative per step), far below the tolerance; a worker that
    # trained on the whole batch, or on the other worker's half twice, is off by ~1e-2.
    a, b = _weights(out / "one" / "model.keras"), _weights(out / "two" / "model.keras")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    import keras

    from cnnctl import models
    keras.utils.set_random_seed(0)
    initial = np.asarray(models.build("lenet5", num_classes=2).weights[0])
    assert np.abs(initial - a[0]).max() > 1e-3              # the steps did move the weights

    # Only the chief's run directory exists; the other worker's scratch copy is gone.
    assert sorted(p.name for p in out.iterdir()) == ["one", "two"]
    assert json.loads((out / "two" / "metrics.json").read_text())["replicas"] == 2
    assert _scratch_left(tmp_path) == [], "a worker left its scratch folder behind"


def test_a_worker_killed_mid_epoch_stops_the_job_and_the_resume_ends_bit_identical(make_folder, tmp_path):
    data = make_folder(classes=3, per_class=40)           # 120 images: 15 steps an epoch
    env = _env(tmp_path)
    common = ["--data", data, "--epochs", "3", "--checkpoint-every", "3", "--out-dir", tmp_path, *SMALL,
              "--set", "data.augment=['flip','crop']"]
    ref = _cnnctl("launch", "--workers", "2", "--", "train", *common, "--name", "reference", env=env)
    text, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, text

    victim = _cnnctl("launch", "--workers", "2", "--", "train", *common, "--name", "victim", env=env)
    pids = None
    latest = tmp_path / "victim" / "backup" / "LATEST"
    deadline = time.time() + 300
    lines = []
    for line in victim.stdout:                            # "worker pids: w0=..., w1=..."
        lines.append(line)
        if line.startswith("worker pids:"):
            pids = dict(re.findall(r"w(\d)=(\d+)", line))
            break
    assert pids, "".join(lines)
    while not latest.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.005)
    os.kill(int(pids["1"]), signal.SIGKILL)
    rest, _ = victim.communicate(timeout=120)             # no hang: the launcher stops the chief
    text = "".join(lines) + rest
    assert victim.returncode != 0
    assert "worker 1 was killed by SIGKILL" in text and "Traceback" not in text, text
    assert not (tmp_path / "victim" / "metrics.json").exists(), "the run finished before it could be killed"
    resume = f"cnnctl launch --workers 2 -- train --resume {(tmp_path / 'victim').resolve()}"
    assert resume in text, text
    state = json.loads((tmp_path / "victim" / "backup" / latest.read_text().strip() / "state.json").read_text())
    assert 0 < state["step_in_epoch"] < 15                # mid-epoch

    resumed = _cnnctl("launch", "--workers", "2", "--", "train", "--resume", tmp_path / "victim", env=env)
    text, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, text
    assert "resuming" in text
    a, b = _weights(tmp_path / "reference" / "model.keras"), _weights(tmp_path / "victim" / "model.keras")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert _scratch_left(tmp_path) == [], "the killed worker's scratch copy outlived the launcher"


def test_multiworker_without_a_cluster_and_a_launch_of_a_non_training_command_are_one_message(tmp_path):
    p = _cnnctl("train", "--strategy", "multiworker", "--epochs", "1", "--out-dir", tmp_path / "runs",
                env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"})
    text, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "Traceback" not in text, text
    assert "needs TF_CONFIG" in text and "cnnctl launch --workers" in text
    assert not (tmp_path / "runs").exists()
    p = _cnnctl("launch", "--workers", "2", "--", "predict", "x.jpg")
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and "runs training commands" in text and "Traceback" not in text, text

    import socket

    with socket.socket() as taken:                          # a port some other program listens on
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = _cnnctl("launch", "--workers", "2", "--port", port, "--", "train", "--epochs", "1",
                    "--out-dir", tmp_path / "runs2", env=_env(tmp_path))
        text, _ = p.communicate(timeout=300)
    assert p.returncode == 2 and "could not listen" in text and "Traceback" not in text, text
    assert not (tmp_path / "runs2").exists()


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free (Slurm's resolver numbers a node's tasks from a base port)."""
    import socket

    for _ in range(50):
        with socket.socket() as a:
            a.bind(("localhost", 0))
            base = a.getsockname()[1]
            try:
                with socket.socket() as b:
                    b.bind(("localhost", base + 1))
                    return base
            except OSError:
                continue
    raise AssertionError("no two consecutive free ports")


def test_two_slurm_tasks_on_one_node_train_one_job(make_folder, tmp_path):
    """`--cluster slurm` reads the layout srun gives each task (here: 2 tasks on node localhost)."""
    data = make_folder(classes=2, per_class=8)
    base = _two_free_ports()
    procs = []
    for rank in range(2):
        env = {**_env(tmp_path), "SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": "2",
               "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "2",
               "CNNCTL_PORT_BASE": str(base), "TF_NUM_INTRAOP_THREADS": "1"}
        env.pop("TF_CONFIG", None)
        procs.append(_cnnctl("train", "--cluster", "slurm", "--data", data, "--epochs", "1", "--out-dir",
                             tmp_path / "runs", "--name", "slurm", *SMALL, env=env))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "2 workers x 1 replica(s) x 4" in outs[0] and outs[1].strip() == "", outs
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["slurm"]
    assert json.loads((tmp_path / "runs" / "slurm" / "metrics.json").read_text())["replicas"] == 2
    assert _scratch_left(tmp_path) == []


def test_mixed_float16_training_scales_the_loss():
    """What `--precision auto` picks on GPUs: float16 compute with a dynamic loss scale, so that small
    gradients do not flush to zero (the optimizer Keras compiles is a LossScaleOptimizer)."""
    import keras

    from cnnctl import models
    from cnnctl.tasks import classify

    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build("lenet5", num_classes=10)
        classify.compile_model(model, keras.optimizers.SGD(0.1), 10)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
        y = np.eye(10, dtype="float32")[np.arange(8)]
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert "float16" in {layer.compute_dtype for layer in model.layers}   # the convolutions compute in fp16
        assert all(np.isfinite(np.asarray(w)).all() for w in model.weights)
    finally:
        keras.mixed_precision.set_global_policy(before)


def test_finetune_runs_as_two_workers(make_folder, tmp_path):
    """`finetune` loads its backbone before the engine starts: the strategy must come even earlier."""
    data = make_folder(classes=3, per_class=8)
    p = _cnnctl("launch", "--workers", "2", "--", "finetune", "--data", data, "--backbone", "fashion_cnn",
                "--weights", "fashion_mnist", "--freeze", "conv", "--epochs", "1", "--batch-size", "8",
                "--out-dir", tmp_path / "runs", "--name", "ft", env=_env(tmp_path))
    text, _ = p.communicate(timeout=600)
    assert p.returncode == 0, text
    assert "2 workers x 1 replica(s) x 4" in text and "Traceback" not in text
    assert "[w1] " not in text, "a non-chief worker printed"
    assert [q.name for q in (tmp_path / "runs").iterdir()] == ["ft"]
    assert _scratch_left(tmp_path) == []


def test_without_the_launcher_a_worker_whose_peer_dies_stops_with_one_message(make_folder, tmp_path):
    """Two workers started by hand (as on two machines); one is killed. TensorFlow's heartbeat check
    aborts the survivor's all-reduce, and cnnctl turns that into one message and exit 5, not a hang."""
    data = make_folder(classes=3, per_class=40)
    ports = [_two_free_ports()]
    ports.append(ports[0] + 1)
    procs = []
    for i in range(2):
        cluster = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
        env = {**_env(tmp_path), "TF_CONFIG": json.dumps(cluster), "TF_NUM_INTRAOP_THREADS": "1"}
        procs.append(_cnnctl("train", "--data", data, "--epochs", "200", "--checkpoint-every", "5",
                             "--out-dir", tmp_path / "runs", "--name", "pair", *SMALL, env=env))
    latest = tmp_path / "runs" / "pair" / "backup" / "LATEST"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    procs[1].kill()
    procs[1].communicate()
    start = time.time()
    text, _ = procs[0].communicate(timeout=240)                # a hang fails here
    assert procs[0].returncode == 5, text
    assert "lost contact with another worker" in text and "--resume" in text and "Traceback" not in text, text
    assert time.time() - start < 240
