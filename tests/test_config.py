"""Every config composes, alone and as part of the pipeline (lightning-hydra-template style)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from jobs.core.paths import CONF_DIR

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="pipeline", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    extra = ["feedback.path=labels.jsonl"] if (group, option) == ("feedback", "file") else []
    cfg = compose_with(f"{group}={option}", *extra)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert group == "experiment" or container[group]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_default_pipeline_resolves_to_the_baseball_experiment():
    cfg = compose_with()
    assert cfg.experiment_name == "baseball"
    assert cfg.mlflow.experiment == "promptgate-baseball"
    assert cfg.prompt.name == "baseball-hitting-assistant"
    assert cfg.feedback.criteria[0].name == "recommendation"  # the rubric comes from the experiment
    assert OmegaConf.to_container(cfg.model, resolve=True)["provider"] == "sim"


def test_every_key_has_a_comment():
    """A one-line comment on every key: the config is the documentation."""
    missing = []
    for path in CONF_DIR.rglob("*.yaml"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
                continue
            if stripped.endswith("|") and "#" in stripped:
                continue
            in_block = line.startswith("  ") and not stripped.split(":")[0].replace("_", "").isalnum()
            if "#" not in stripped and not in_block and not stripped.endswith(":") and "defaults" not in stripped:
                missing.append(f"{path.relative_to(CONF_DIR)}:{n}: {stripped}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)
