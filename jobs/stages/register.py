"""register: store the seed prompt as a version only when its text changed, and make sure
the ``baseline`` and ``production`` aliases exist."""

from __future__ import annotations

from typing import Any

from jobs.core.contract import TAG_PIPELINE
from jobs.core.errors import UserError
from jobs.core.files import read_text
from jobs.core.results import RegisterResult
from jobs.stages.common import finish, reuse, stage_run
from jobs.stages.context import StageContext
from jobs.store import prompts, tracking


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


def run(ctx: StageContext) -> RegisterResult:
    cfg = ctx.cfg
    text = seed_text(cfg)
    name = str(cfg.prompt.name)
    inputs = tracking.inputs_hash(name, text)
    if (done := reuse(ctx, inputs)) is not None:
        return done
    with stage_run(ctx, inputs) as run:
        seed_version, created = seed_version_of(ctx, name, text)
        aliases = {}
        for alias in ("baseline", "production"):
            found = prompts.by_alias(name, alias)
            if found is None:
                prompts.set_alias(name, alias, seed_version)
                ctx.say(f"alias '{alias}' -> v{seed_version}")
            aliases[alias] = int(found.version) if found is not None else seed_version
        tracking.log(params={"prompt_name": name, "seed_version": seed_version, "created": created})
        ctx.say(f"production -> v{aliases['production']}; prompt: {ctx.store.prompt_link(name)}")
        return finish(ctx, RegisterResult(prompt_name=name, seed_version=seed_version, created=created,
                                          production_version=aliases["production"],
                                          baseline_version=aliases["baseline"], run_id=run.info.run_id))


def seed_version_of(ctx: StageContext, name: str, text: str) -> tuple[int, bool]:
    """(the version holding the seed text, whether this run registered it)."""
    same = [v for v in prompts.versions(name) if v.template.strip() == text]
    if same:  # candidates are newer versions too, so look for the text, not at the latest
        version = max(int(v.version) for v in same)
        ctx.say(f"prompt '{name}' v{version} already holds this text; no new version")
        return version, False
    version = prompts.register(name, text, str(ctx.cfg.prompt.commit_message), {TAG_PIPELINE: ctx.pipeline_id})
    ctx.say(f"registered prompt '{name}' v{version}")
    return version, True
