"""A release: the versions of every prompt of one agent, named by a version of its first prompt.

One-prompt configs have releases of one prompt, and nothing here changes for them. With
``prompt.companions`` the first prompt's version carries the tag ``promptgate.release``,
``{companion name: version}``; register and optimize write it, evaluate, compare and traffic
read it to give the agent every prompt, and the gate moves every prompt's alias together.
So results, aliases and the gate's records keep naming one version number per release.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.core.contract import TAG_RELEASE
from jobs.core.errors import UserError
from jobs.core.files import read_text
from jobs.store import prompts


def start_version(cfg: Any, registered: Any) -> int:
    """The release this pipeline improves (register's result says which exist): production's,
    which compare measures as the baseline, so each pipeline builds on what the last promoted;
    the seed's with optimizer.start=seed. evaluate measures it and optimize starts from it."""
    seed = str(cfg.optimizer.get("start", "production")) == "seed"
    return int(registered.seed_version if seed else registered.production_version)


def seed_text(spec: Any, where: str, max_file_mb: float) -> str:
    """A prompt's seed text from its ``seed_text`` or ``seed_file`` (``where`` names the config key)."""
    if spec.get("seed_text"):
        text, source = str(spec["seed_text"]), f"{where}.seed_text"
    elif spec.get("seed_file"):
        text = read_text(str(spec["seed_file"]), f"{where}.seed_file", max_file_mb)
        source = str(spec["seed_file"])
    else:
        raise UserError(f"no seed prompt: set {where}.seed_file or {where}.seed_text")
    text = text.strip()
    if not text:
        raise UserError(f"{source}: the seed prompt is empty; write the agent's prompt there")
    return text


def companions(cfg: Any) -> dict[str, str]:
    """role -> prompt name of the prompts released with the first one."""
    return {str(role): str(spec["name"]) for role, spec in (cfg.prompt.get("companions") or {}).items()}


def companion_seeds(cfg: Any) -> dict[str, str]:
    """prompt name -> seed text of every companion."""
    return {str(spec["name"]): seed_text(spec, f"prompt.companions.{role}", float(cfg.limits.max_file_mb))
            for role, spec in (cfg.prompt.get("companions") or {}).items()}


def tag_value(versions: dict[str, int]) -> str:
    return json.dumps({k: int(v) for k, v in sorted(versions.items())}, sort_keys=True)


def tagged(cfg: Any, version: Any) -> dict[str, int]:
    """{companion name: version} as the first prompt's version records it (possibly incomplete)."""
    return json.loads(prompts.version(str(cfg.prompt.name), version).tags.get(TAG_RELEASE) or "{}")


def of(cfg: Any, version: Any) -> dict[str, int]:
    """{companion name: version} released with this version of the first prompt."""
    wanted = companions(cfg)
    if not wanted:
        return {}
    recorded = tagged(cfg, version)
    lacking = [n for n in wanted.values() if n not in recorded]
    if lacking:
        raise UserError(f"prompt '{cfg.prompt.name}' v{version} names no version of {', '.join(lacking)}: it was "
                        "registered before that prompt was a companion; run register, which records one for the "
                        "versions production and baseline point at")
    return {n: int(recorded[n]) for n in wanted.values()}


def adopt(cfg: Any, alias: str, version: Any, seed_versions: dict[str, int]) -> dict[str, int]:
    """A companion added to a pipeline whose first prompt has ``alias`` already: the version it
    points at is recorded as released with the companion's ``alias`` version (its seed's, and
    the alias set, when it has none). Returns {name: version} it recorded anew."""
    recorded, added = tagged(cfg, version), {}
    for n, seed in seed_versions.items():
        found = prompts.by_alias(n, alias)
        if found is None:  # the companion's alias follows the first prompt's
            prompts.set_alias(n, alias, int(recorded.get(n, seed)))
        if n not in recorded:
            added[n] = int(found.version) if found is not None else int(seed)
    if added:
        prompts.tag_version(str(cfg.prompt.name), version, {TAG_RELEASE: tag_value({**recorded, **added})})
    return added


def uris(cfg: Any, version: Any) -> dict[str, str]:
    """role -> prompt URI of every prompt of the release the agent is built with."""
    released = of(cfg, version)
    return {str(cfg.prompt.role): f"prompts:/{cfg.prompt.name}/{int(version)}",
            **{role: f"prompts:/{name}/{released[name]}" for role, name in companions(cfg).items()}}


def texts(cfg: Any, version: Any) -> dict[str, str]:
    """prompt name -> text of every prompt of the release."""
    name = str(cfg.prompt.name)
    return {name: prompts.version(name, version).template.strip(),
            **{n: prompts.version(n, v).template.strip() for n, v in of(cfg, version).items()}}


def describe(cfg: Any, version: Any) -> str:
    """'v3' for one prompt; 'v3 (responder v2)' with companions."""
    return label(cfg, {**of(cfg, version), str(cfg.prompt.name): int(version)})


def label(cfg: Any, versions: dict[str, int]) -> str:
    """``describe`` of a release given as {name: version}."""
    roles = {n: r for r, n in companions(cfg).items()}
    others = [f"{roles.get(n, n)} v{v}" for n, v in versions.items() if n != str(cfg.prompt.name)]
    return f"v{int(versions[str(cfg.prompt.name)])}" + (f" ({', '.join(others)})" if others else "")


def current(cfg: Any, alias: str) -> dict[str, int]:
    """{name: version} ``alias`` points at for every prompt of the agent (a prompt without it is left out)."""
    names = [str(cfg.prompt.name), *companions(cfg).values()]
    return {n: int(found.version) for n in names if (found := prompts.by_alias(n, alias)) is not None}


def point(cfg: Any, alias: str, version: Any) -> dict[str, int]:
    """Point ``alias`` of every prompt of the release at its version; see ``move``."""
    return move(cfg, alias, {**of(cfg, version), str(cfg.prompt.name): int(version)})


def move(cfg: Any, alias: str, target: dict[str, int]) -> dict[str, int]:
    """Point ``alias`` of each prompt at its version in ``target``, the first prompt last: all or
    none, since a failure puts back what had moved. Returns ``target``."""
    name = str(cfg.prompt.name)
    target = {**{n: int(v) for n, v in target.items() if n != name}, name: int(target[name])}
    before = {n: prompts.by_alias(n, alias) for n in target}
    moved: list[str] = []
    try:
        for n, v in target.items():
            prompts.set_alias(n, alias, int(v))
            moved.append(n)
    except Exception:
        for n in moved:
            if before[n] is None:
                prompts.delete_alias(n, alias)
            else:
                prompts.set_alias(n, alias, int(before[n].version))
        raise
    return target
