"""Each Hydra multirun job becomes one Kubernetes Job running ``python -m jobs.<task>`` with
that job's overrides; at most ``parallelism`` run at once. Heavy imports stay in launch()."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write


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

    def point_config(self, num: int, overrides: Sequence[str], sweep_dir: Path) -> DictConfig:
        """The point's own config, composed as Hydra's launchers do (its overrides on the
        sweep's hydra overrides), with its job id, number and output dir."""
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.id = num  # as Hydra's basic launcher numbers them
            sweep_config.hydra.job.num = num
        with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str((sweep_dir / str(num)).absolute())
        return sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from omegaconf import OmegaConf

        from jobs.launch.launchers import KubernetesLauncher, shard_defaults
        from jobs.launch.sweeps import RESULT_FILE, as_dict
        from jobs.store.sweeps import connect_uri

        assert self.config is not None
        reading = threading.Lock()  # the tracking URI is the mlflow client's global: one point reads at a time
        spec = OmegaConf.create(self.settings)
        task = str(self.config.hydra.job.name)  # python -m jobs.optimize -> "optimize"
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(f"[kubernetes launcher] {len(job_overrides)} jobs of {task} as Kubernetes Jobs in "
              f"{spec.namespace}, {spec.parallelism} at a time")
        # composed one after another here, not in the pool's threads: the config loader is not thread-safe
        configs = [self.point_config(initial_job_idx + idx, o, sweep_dir) for idx, o in enumerate(job_overrides)]

        def run_one(idx: int, overrides: Sequence[str]) -> JobReturn:
            num = initial_job_idx + idx
            sweep_config = configs[idx]
            task_cfg = copy.deepcopy(sweep_config)  # what the task sees: the config without its hydra node
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            log = io.StringIO()
            launcher = KubernetesLauncher(spec, str(sweep_config.pipeline_id), out=log,
                                          shards=shard_defaults(sweep_config))
            code = launcher.run(task, [*overrides, "sweep_point=true"])
            result = {}
            if code == 0:
                with reading:
                    connect_uri(str(sweep_config.mlflow.tracking_uri))  # the point's result is read back from there
                    result = as_dict(launcher.result())
            ret = JobReturn(overrides=list(overrides), cfg=task_cfg, hydra_cfg=OmegaConf.masked_copy(sweep_config, "hydra"),
                            working_dir=str(sweep_dir / str(num)), task_name=task)
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
