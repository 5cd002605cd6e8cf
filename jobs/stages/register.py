"""register: store the seed prompt as a version only when its text changed, and make sure
the ``baseline`` and ``production`` aliases exist."""

from __future__ import annotations

from typing import Any

from jobs.core.errors import UserError
from jobs.core.files import read_text
from jobs.core.results import RegisterResult
from jobs.stages.common import finish, reuse, say
from jobs.store import tracking

STAGE = "register"


def seed_text(cfg: Any) -> str:
    if cfg.prompt.get("seed_text"):
        text, where = str(cfg.prompt.seed_text), "prompt.seed_text"
    elif cfg.prompt.get("seed_file"):
        text = read_text(str(cfg.prompt.seed_file), "prompt.seed_file", float(cfg.limits.max_file_mb))
        where = str(cfg.prompt.seed_file)
    else:
        raise UserError("no seed prompt: set prompt.seed_file or prompt.seed_text")
    text = text.strip()
    if not text:
        raise UserError(f"{where}: the seed prompt is empty; write the agent's system prompt there")
    return text


def check(cfg: Any) -> None:
    seed_text(cfg)


def run(cfg: Any) -> RegisterResult:
    text = seed_text(cfg)
    name = str(cfg.prompt.name)
    experiment_id = tracking.connect(cfg)
    inputs = tracking.inputs_hash(name, text)
    if (done := reuse(cfg, experiment_id, STAGE, inputs)) is not None:
        return done

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    with tracking.stage_run(cfg, experiment_id, STAGE, inputs) as run:
        versions = tracking.prompt_versions(name)
        same = [v for v in versions if v.template.strip() == text]
        if same:  # candidates are newer versions too, so look for the text, not at the latest
            seed_version, created = max(int(v.version) for v in same), False
            say(STAGE, f"prompt '{name}' v{seed_version} already holds this text; no new version")
        else:
            pv = mlflow.genai.register_prompt(name=name, template=text, commit_message=str(cfg.prompt.commit_message),
                                              tags={tracking.TAG_PIPELINE: str(cfg.pipeline_id)})
            seed_version, created = int(pv.version), True
            say(STAGE, f"registered prompt '{name}' v{seed_version}")
        aliases = {}
        for alias in ("baseline", "production"):
            try:
                aliases[alias] = int(client.get_prompt_version_by_alias(name, alias).version)
            except Exception:  # noqa: BLE001 - MLflow raises a plain MlflowException for a missing alias
                mlflow.genai.set_prompt_alias(name, alias=alias, version=seed_version)
                aliases[alias] = seed_version
                say(STAGE, f"alias '{alias}' -> v{seed_version}")
        mlflow.log_params({"prompt_name": name, "seed_version": seed_version, "created": created})
        say(STAGE, f"production -> v{aliases['production']}; prompt: {tracking.prompt_link(cfg, name)}")
        return finish(RegisterResult(prompt_name=name, seed_version=seed_version, created=created,
                                     production_version=aliases["production"], baseline_version=aliases["baseline"],
                                     run_id=run.info.run_id))
