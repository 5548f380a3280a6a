"""``cnnctl launch``: N local worker processes of one multi-worker job, as a scheduler would start them.

Each worker is ``python -m cnnctl COMMAND ...`` with its own ``TF_CONFIG`` (the same cluster
of ``localhost`` ports, its own task index). Their output lines are prefixed ``[wI]`` and
merged. When one worker fails, the others would wait in their next all-reduce until
TensorFlow's peer health check gave up, so the launcher stops them at once and exits
non-zero with the failing worker's message and the command that resumes the run.

This exists to try multi-worker training on one machine and for the tests. On a cluster,
start one ``cnnctl train`` per machine with TF_CONFIG (or ``--cluster slurm``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cnnctl.errors import CnnctlError
from cnnctl.train.workers import LAUNCH_STATE_ENV, SCRATCH_ENV

STOP_GRACE_S = 10.0    # SIGTERM, then SIGKILL after this long
POLL_S = 0.1


def free_ports(n: int) -> list[int]:
    """n ports the OS says are free now (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    last_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def error_lines(self) -> list[str]:
        """The worker's own `error:` / `fix:` lines, if it printed any."""
        return [line for line in self.last_lines if line.startswith(("error:", "fix:"))]


def _pump(worker: Worker, out, lock: threading.Lock) -> None:
    """Copy a worker's output to ours, line by line, prefixed with its index."""
    prefix = f"[w{worker.index}] "
    for raw in iter(out.readline, ""):
        line = raw.rstrip("\n")
        worker.last_lines = (worker.last_lines + [line])[-40:]
        with lock:
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()
    out.close()


def worker_threads(workers: int) -> int:
    """Intra-op threads per worker: the cores shared out, so that N local workers do not fight for them."""
    return max(1, (os.cpu_count() or 1) // workers)


def launch(workers: int, command: list[str], port: int | None = None) -> int:
    """Run ``cnnctl COMMAND`` as ``workers`` local workers; return the exit status for the launcher."""
    if workers < 1:
        raise CnnctlError(f"--workers {workers}: need at least one worker", hint="e.g. --workers 2")
    if not command:
        raise CnnctlError("no command to launch", hint="e.g. `cnnctl launch --workers 2 -- train --epochs 1`")
    if command[0] not in ("train", "finetune"):
        raise CnnctlError(f"`cnnctl launch` runs training commands, not {command[0]!r}",
                          hint="e.g. `cnnctl launch --workers 2 -- train ...` or `... -- finetune ...`")
    ports = list(range(port, port + workers)) if port else free_ports(workers)
    scratch = Path(tempfile.mkdtemp(prefix="cnnctl-launch-"))
    state = scratch / "run-directory"
    lock = threading.Lock()
    env_base = {**os.environ, LAUNCH_STATE_ENV: str(state), SCRATCH_ENV: str(scratch), "PYTHONUNBUFFERED": "1",
                "COLUMNS": os.environ.get("COLUMNS", "120")}
    env_base.setdefault("TF_NUM_INTRAOP_THREADS", str(worker_threads(workers)))
    print(f"launching {workers} workers on localhost ports {', '.join(map(str, ports))}: "
          f"cnnctl {' '.join(command)}", flush=True)
    started: list[Worker] = []
    try:
        for i in range(workers):
            env = {**env_base, "TF_CONFIG": tf_config(ports, i)}
            p = subprocess.Popen([sys.executable, "-m", "cnnctl", *command], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
            w = Worker(i, p)
            w.reader = threading.Thread(target=_pump, args=(w, p.stdout, lock), daemon=True)
            w.reader.start()
            started.append(w)
        with lock:
            print("worker pids: " + ", ".join(f"w{w.index}={w.process.pid}" for w in started), flush=True)
        failed = _watch(started)
    except KeyboardInterrupt:
        _stop(started, signal.SIGINT)
        print("interrupted: stopped every worker.", flush=True)
        _print_resume(workers, port, state)
        return 130
    finally:
        run_path = state.read_text(encoding="utf-8").strip() if state.exists() else ""
        shutil.rmtree(scratch, ignore_errors=True)
    for w in started:
        if w.reader is not None:
            w.reader.join(timeout=5)
    if failed is None:
        return 0
    _report_failure(failed, started, workers, port, run_path)
    return failed.process.returncode if failed.process.returncode and failed.process.returncode > 0 else 1


def _watch(workers: list[Worker]) -> Worker | None:
    """Wait for every worker; on the first failure stop the rest and return the failed one."""
    while True:
        running = False
        for w in workers:
            code = w.process.poll()
            if code is None:
                running = True
            elif code != 0:
                _stop([o for o in workers if o is not w], signal.SIGTERM)
                return w
        if not running:
            return None
        time.sleep(POLL_S)


def _stop(workers: list[Worker], sig: signal.Signals) -> None:
    """Signal every running worker's process group, then SIGKILL what is left after the grace time."""
    for w in workers:
        if w.process.poll() is None:
            try:
                os.killpg(w.process.pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE_S
    for w in workers:
        try:
            w.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(w.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            w.process.wait()


def _resume_command(workers: int, port: int | None, run_path: str) -> str:
    port_arg = f" --port {port}" if port else ""
    return f"cnnctl launch --workers {workers}{port_arg} -- train --resume {run_path}"


def _print_resume(workers: int, port: int | None, state: Path) -> None:
    run_path = state.read_text(encoding="utf-8").strip() if state.exists() else ""
    if run_path:
        print(f"continue with `{_resume_command(workers, port, run_path)}`", flush=True)


def _report_failure(failed: Worker, everyone: list[Worker], workers: int, port: int | None, run_path: str) -> None:
    from cnnctl.cli.common import console

    err = console(stderr=True)
    from rich.markup import escape

    own = failed.error_lines() or next((w.error_lines() for w in everyone if w.error_lines()), [])
    err.print(f"[bold red]error:[/] worker {failed.index} {failed.describe_exit()}; "
              f"the other {len(everyone) - 1} worker(s) were stopped", soft_wrap=True)
    for line in own:
        err.print(f"  [w{failed.index}] {escape(line)}", soft_wrap=True)
    from cnnctl.train.rundir import RunDir

    if run_path and Path(run_path).is_dir() and RunDir(run_path).has_backup():
        err.print(f"[yellow]fix:[/] the last checkpoint in {escape(run_path)} is intact; continue with "
                  f"`{escape(_resume_command(workers, port, run_path))}`", soft_wrap=True)
    elif not own:
        err.print("[yellow]fix:[/] no checkpoint was written yet; read the worker's output above, "
                  "then start the job again", soft_wrap=True)
