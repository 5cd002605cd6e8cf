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


def of(cfg: Any, version: Any) -> dict[str, int]:
    """{companion name: version} released with this version of the first prompt. A version from
    before a companion was added names none: it is released with that companion's production."""
    wanted = companions(cfg)
    if not wanted:
        return {}
    tagged = json.loads(prompts.version(str(cfg.prompt.name), version).tags.get(TAG_RELEASE) or "{}")
    out = {}
    for name in wanted.values():
        if name not in tagged and (found := prompts.by_alias(name, "production")) is None:
            raise UserError(f"prompt '{cfg.prompt.name}' v{version} names no version of '{name}', which has no "
                            "production alias either; run register first")
        out[name] = int(tagged[name]) if name in tagged else int(found.version)
    return out


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
    released = of(cfg, version)
    roles = {n: r for r, n in companions(cfg).items()}
    return f"v{int(version)}" + (f" ({', '.join(f'{roles[n]} v{v}' for n, v in released.items())})" if released else "")


def point(cfg: Any, alias: str, version: Any) -> dict[str, int]:
    """Point ``alias`` of every prompt of the release at its version, the first prompt last:
    all or none (a failure moves back what had moved). Returns {name: version} moved to."""
    name = str(cfg.prompt.name)
    target = {**of(cfg, version), name: int(version)}
    before = {n: prompts.by_alias(n, alias) for n in target}
    moved: list[str] = []
    try:
        for n, v in target.items():
            prompts.set_alias(n, alias, v)
            moved.append(n)
    except Exception:
        for n in moved:
            if before[n] is not None:
                prompts.set_alias(n, alias, int(before[n].version))
        raise
    return target
