"""register: store the seed prompt as a version only when its text changed, and make sure
the ``baseline`` and ``production`` aliases exist."""

from __future__ import annotations

from typing import Any

from jobs.core.contract import TAG_PIPELINE, TAG_RELEASE
from jobs.core.results import RegisterResult
from jobs.stages import release
from jobs.stages.common import finish, reuse, stage_run
from jobs.stages.context import StageContext
from jobs.store import prompts, tracking


def seed_text(cfg: Any) -> str:
    return release.seed_text(cfg.prompt, "prompt", float(cfg.limits.max_file_mb))


def check(cfg: Any) -> None:
    seed_text(cfg)
    release.companion_seeds(cfg)


def run(ctx: StageContext) -> RegisterResult:
    cfg = ctx.cfg
    text = seed_text(cfg)
    name = str(cfg.prompt.name)
    seeds = release.companion_seeds(cfg)
    inputs = tracking.inputs_hash(name, text, *([seeds] if seeds else []))
    if (done := reuse(ctx, inputs)) is not None:
        return done
    with stage_run(ctx, inputs) as run:
        released = {n: seed_version_of(ctx, n, t)[0] for n, t in seeds.items()}
        existing = {alias: prompts.by_alias(name, alias) for alias in ("baseline", "production")}
        for alias, found in existing.items():  # a companion new to this pipeline joins what is live
            for n, v in release.adopt(cfg, alias, found.version, released).items() if found and seeds else ():
                ctx.say(f"'{alias}' v{found.version} is released with '{n}' v{v}")
        seed_version, created = seed_version_of(ctx, name, text, released if seeds else None)
        aliases = {}
        for alias, found in existing.items():
            if found is None:
                release.point(cfg, alias, seed_version)
                ctx.say(f"alias '{alias}' -> {release.describe(cfg, seed_version)}")
            aliases[alias] = int(found.version) if found is not None else seed_version
        tracking.log(params={"prompt_name": name, "seed_version": seed_version, "created": created})
        ctx.say(f"production -> {release.describe(cfg, aliases['production'])}; prompt: {ctx.store.prompt_link(name)}")
        return finish(ctx, RegisterResult(prompt_name=name, seed_version=seed_version, created=created,
                                          production_version=aliases["production"],
                                          baseline_version=aliases["baseline"], companions=released,
                                          run_id=run.info.run_id))


def seed_version_of(ctx: StageContext, name: str, text: str,
                    released: dict[str, int] | None = None) -> tuple[int, bool]:
    """(the version holding the seed text, and with companions the same release; whether this run registered it)."""
    tags = {TAG_PIPELINE: ctx.pipeline_id}
    if released is not None:
        tags[TAG_RELEASE] = release.tag_value(released)
    same = [v for v in prompts.versions(name) if v.template.strip() == text
            and (released is None or v.tags.get(TAG_RELEASE) == tags[TAG_RELEASE])]
    if same:  # candidates are newer versions too, so look for the text, not at the latest
        version = max(int(v.version) for v in same)
        ctx.say(f"prompt '{name}' v{version} already holds this text; no new version")
        return version, False
    version = prompts.register(name, text, str(ctx.cfg.prompt.commit_message), tags)
    ctx.say(f"registered prompt '{name}' v{version}")
    return version, True
