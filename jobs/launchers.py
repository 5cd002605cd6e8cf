"""Launchers run one stage somewhere and return its exit code. ``launcher=local`` runs it
as a local process; the same stage command runs in a container on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

from jobs.paths import ROOT


def stage_command(stage: str, overrides: list[str]) -> list[str]:
    """The command that runs a stage: the same locally and as a container's args."""
    return ["python", "-m", f"jobs.{stage}", *overrides]


@dataclass
class LocalLauncher:
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the stage process

    def run(self, stage: str, overrides: list[str]) -> int:
        cmd = stage_command(stage, overrides)
        cmd[0] = sys.executable
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.call(cmd, env=env, cwd=os.getcwd())
