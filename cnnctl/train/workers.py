"""Who writes what in a multi-worker run: the chief writes the run directory, the others a scratch copy.

Every worker runs the same code, step for step: saving a model or a backup reads
the variables, evaluation gathers the workers' predictions, and a worker that
skipped a step the others take would leave them waiting in an all-reduce. So a
non-chief worker does write everything a run writes, but to a temporary folder
that is removed when it finishes (TensorFlow's multi-worker guide does the same).

``cnnctl launch`` passes ``CNNCTL_LAUNCH_STATE``, a file in which the chief
records the run directory, so that the launcher can name the ``--resume`` command
when a worker dies, and ``CNNCTL_WORKER_SCRATCH``, a folder for the scratch
copies that it removes even when a worker was killed before it could.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

LAUNCH_STATE_ENV = "CNNCTL_LAUNCH_STATE"
SCRATCH_ENV = "CNNCTL_WORKER_SCRATCH"   # the launcher's folder for its workers' scratch (removed even after a kill)


@dataclasses.dataclass
class Role:
    chief: bool = True
    index: int = 0
    workers: int = 1
    scratch: Path | None = None

    @classmethod
    def of(cls, strategy: str, cluster: str = "tf_config") -> Role:
        """This process's part in the job: from TF_CONFIG (or Slurm) when the strategy is multi-worker."""
        from cnnctl.train import runtime

        if not runtime.wants_multiworker(strategy, cluster):
            return cls()
        place = runtime.cluster_place(cluster)
        return cls(chief=place.chief, index=place.rank, workers=place.size)

    def _scratch(self) -> Path:
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix=f"cnnctl-worker{self.index}-",
                                                 dir=os.environ.get(SCRATCH_ENV) or None))
        return self.scratch

    def out_dir(self, out_dir: str) -> str:
        """Where a new run directory goes: the recipe's folder for the chief, scratch for the rest."""
        return out_dir if self.chief else str(self._scratch())

    def own_copy(self, run):
        """The run a resumed worker writes into: the run itself for the chief, a scratch copy for the rest.

        The copy holds what a resume reads (config, run files, the latest backup); the
        run directory must be visible to every worker (one machine, or shared storage).
        """
        if self.chief:
            return run
        from cnnctl.train.rundir import RunDir

        target = self._scratch() / run.path.name
        shutil.copytree(run.path, target, ignore=shutil.ignore_patterns("tensorboard", "run.lock", "*.tmp*"))
        return RunDir(target)

    def announce(self, run) -> None:
        """Tell `cnnctl launch` which run directory the job writes (chief only)."""
        state = os.environ.get(LAUNCH_STATE_ENV)
        if self.chief and state:
            Path(state).write_text(str(run.path.resolve()), encoding="utf-8")

    def clean_up(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
