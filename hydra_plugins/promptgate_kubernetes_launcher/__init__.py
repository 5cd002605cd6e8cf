"""Hydra launcher that runs each multirun job as a Kubernetes Job (hydra/launcher=kubernetes)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from jobs.config.schemas import JobSettings


@dataclass
class KubernetesLauncherConf(JobSettings):
    """The Job settings of launcher=kubernetes, plus how many sweep points run at once."""

    _target_: str = "hydra_plugins.promptgate_kubernetes_launcher.launcher.KubernetesHydraLauncher"
    parallelism: int = 2  # sweep points running at once


ConfigStore.instance().store(group="hydra/launcher", name="kubernetes", node=KubernetesLauncherConf, provider="promptgate")
