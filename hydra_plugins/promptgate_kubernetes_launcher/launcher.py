"""Each Hydra multirun job becomes one Kubernetes Job running ``python -m jobs.<task>`` with
that job's overrides; at most ``parallelism`` run at once. Heavy imports stay in launch()."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class KubernetesHydraLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from concurrent.futures import ThreadPoolExecutor

        from omegaconf import OmegaConf

        from jobs.launch.launchers import KubernetesLauncher, shard_defaults
        from jobs.launch.sweeps import RESULT_FILE, as_dict

        assert self.config is not None
        import mlflow

        mlflow.set_tracking_uri(str(self.config.mlflow.tracking_uri))  # each point's result is read back from there
        spec = OmegaConf.create(self.settings)
        task = str(self.config.hydra.job.name)  # python -m jobs.optimize -> "optimize"
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(f"[kubernetes launcher] {len(job_overrides)} jobs of {task} as Kubernetes Jobs in "
              f"{spec.namespace}, {spec.parallelism} at a time")

        def run_one(idx: int, overrides: Sequence[str]) -> JobReturn:
            num = initial_job_idx + idx
            pid = next((o.split("=", 1)[1] for o in overrides if o.startswith("pipeline_id=")),
                       str(self.config.get("pipeline_id", "adhoc")))
            log = io.StringIO()
            launcher = KubernetesLauncher(spec, pid, out=log, shards=shard_defaults(self.config))
            code = launcher.run(task, [*overrides, "sweep_point=true"])
            result = as_dict(launcher.result()) if code == 0 else {}
            ret = JobReturn(overrides=list(overrides), cfg=self.config, hydra_cfg=self.config,
                            working_dir=str(sweep_dir / str(num)))
            ret.status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
            ret.return_value = result if code == 0 else RuntimeError(f"Job exited {code}")
            point = Path(ret.working_dir)
            point.mkdir(parents=True, exist_ok=True)
            (point / "pod.log").write_text(log.getvalue())
            (point / RESULT_FILE).write_text(json.dumps({
                "num": num, "overrides": " ".join(overrides),
                "result": result or {"outcome": f"failed (exit {code})"}}, default=str))
            print(f"[kubernetes launcher] #{num} {' '.join(overrides)}: exit {code}")
            return ret

        with ThreadPoolExecutor(max_workers=int(spec.parallelism)) as pool:
            return list(pool.map(lambda args: run_one(*args), enumerate(job_overrides)))
