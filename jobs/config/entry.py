"""The one way a stage starts: check overrides, compose the config, run, map errors to exit codes.

A stage module defines ``check(cfg)`` (cheap validation, no heavy imports) and
``run(cfg) -> StageResult`` (jobs.core.results; ``finish`` records it on the stage's run,
which is how launchers read it back). Its entrypoint is ``main = stage_main("name", check, run)``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from jobs.config.schemas import check_settings, closest, register_schemas
from jobs.core.errors import EXIT_BAD_INPUT, IncompleteResult, UserError
from jobs.core.paths import CONF_DIR
from jobs.gateway.client import check_budget_config, check_gateway_config

CONFIG_NAME = "pipeline"
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                    "-cd", "--experimental-rerun", "--shell-completion", "-sc"}  # Hydra's flags that take a value
WANTED = {"to Integer": "a whole number", "to Float": "a number", "valid bool": "true or false",
          "list or tuple": "a list, like [a, b]"}  # what to give, by OmegaConf's words for the type it wanted
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # --info's optional value
CONFIG_PATH_ENV = "PROMPTGATE_CONFIG_PATH"  # folders of a user's own config groups, ':'-separated
SEARCHPATH = "hydra.searchpath"


def with_user_configs(overrides: list[str]) -> list[str]:
    """The overrides plus ``hydra.searchpath`` for the folders in $PROMPTGATE_CONFIG_PATH, so a
    user's own ``experiment/``, ``agent/``, ... configs outside this repo compose like ours. An
    explicit ``hydra.searchpath=[...]`` override wins."""
    folders = [f for f in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if f]
    if not folders or any(o.lstrip("+~").startswith(SEARCHPATH) for o in overrides):
        return list(overrides)
    missing = [f for f in folders if not os.path.isdir(f)]
    if missing:
        fail(f"${CONFIG_PATH_ENV}: {', '.join(missing)} is not a folder; give the folder that holds your config "
             "groups (experiment/, agent/, ...)")
    entries = ",".join(f"file://{os.path.abspath(f)}" for f in folders)
    return [*overrides, f"{SEARCHPATH}=[{entries}]"]


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def fail(msg: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {_one_line(msg)}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_overrides(overrides: list[str], stage: str = "pipeline") -> None:
    """Compose once with the plain overrides, so an unknown key, option or a wrong type is exit 2
    with one line that names it and the fix; then once per value of each sweep (``-m key=a,b``),
    whose points cannot compose either when a value is of the wrong type. A value out of range
    is left to its sweep point, which reports it while the others run."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schemas()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        fail(f"bad override: {_one_line(str(e))}; use key=value as in `python -m jobs.{stage} --cfg job`")
    plain = [o.input_line for o in parsed if not o.is_sweep_override()
             and (not o.key_or_group.startswith("hydra") or o.key_or_group == SEARCHPATH)]  # a user's config folders count
    if (quick := quick_error(plain)) is not None:
        fail(f"config: {quick}")
    try:
        check_settings(compose_plain(plain))
    except (HydraException, OmegaConfBaseException) as e:
        fail(f"config: {config_error(e, plain, stage)}")
    except UserError as e:
        fail(f"config: {e}")
    for sweep in (o for o in parsed if o.is_sweep_override() and not o.key_or_group.startswith("hydra")):
        try:
            values = list(sweep.sweep_string_iterator())
        except HydraException:  # an interval for a search sweeper: nothing to list
            continue
        for value in values:
            point = [*plain, f"{sweep.get_key_element()}={value}"]
            try:
                compose_plain(point)
            except (HydraException, OmegaConfBaseException) as e:
                fail(f"config: {config_error(e, point, stage)}")


LITERAL = re.compile(r"[+-]?(\d[\d_]*(\.\d*)?([eE][+-]?\d+)?|inf|nan)|true|false|null|\$\{.*\}|\[.*\]|\{.*\}", re.I)


def quick_error(overrides: list[str]) -> str | None:
    """An error in a key of the root-only sections (evaluate, compare, limits, ...) found from
    the schema alone, worded as Hydra's would be, so the commonest config error exits before
    Hydra composes anything. Anything it cannot judge is left to the composition."""
    import typing
    from dataclasses import fields, is_dataclass

    from jobs.config.schemas import PipelineSettings

    sections = {f.name: f.default_factory for f in fields(PipelineSettings)
                if is_dataclass(f.default_factory)}  # type: ignore[arg-type]
    for o in overrides:
        key, eq, value = o.partition("=")
        section, _, name = key.partition(".")
        if not eq or section not in sections or not name or "." in name:
            continue
        hints = typing.get_type_hints(sections[section])
        if name not in hints:
            best = closest(name, hints)
            return f"{key} is not a key; did you mean {section}.{best}?" if best else None
        wanted = {int: ("Integer", "a whole number"), float: ("Float", "a number")}.get(
            next((t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)), None))
        if wanted and not LITERAL.fullmatch(value.strip()):  # a bare word where a number belongs
            return f"{o}: Value '{value}' of type 'str' could not be converted to {wanted[0]}; give {wanted[1]}"
    return None


def compose_plain(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=overrides)


def config_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (``OmegaConf.to_container``; mappings only), for suggesting
    the one a user meant."""
    keys = []
    for key, child in tree.items() if isinstance(tree, dict) else []:
        keys.append(f"{prefix}{key}")
        keys.extend(config_keys(child, f"{prefix}{key}."))
    return keys


def config_error(e: BaseException, overrides: list[str], stage: str) -> str:
    """Hydra's error as one line: the key, option or value, and the fix."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if m := re.search(r"Could not find '([^']+)/([^']+)'", first):
        group, option = m.groups()
        options = [o for o in re.findall(r"^\t(\S+)$", text.split("Config search path:")[0], flags=re.M)
                   if not o.endswith("_schema")]  # the schemas an option extends are not options
        return f"{group}={option}: no such option; use one of {', '.join(options)}" if options else first
    if m := re.search(r"Could not (?:override|append to) '([^']+)'", first):
        key = m.group(1)
        rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        try:
            from omegaconf import OmegaConf

            best = closest(key, config_keys(OmegaConf.to_container(compose_plain(rest), resolve=False)))
        except Exception:  # noqa: BLE001 - another override is broken too: no suggestion
            best = None
        fix = f"did you mean {best}?" if best else f"`python -m jobs.{stage} --cfg job` prints every key"
        return f"{key} is not a key; {fix}"
    if m := re.search(r"Error merging override (\S+)", first):
        cause = (str(e.__cause__ or "").strip().splitlines() or [first])[0]
        wanted = next((w for t, w in WANTED.items() if t in cause), "a value of the key's type")
        return f"{m.group(1)}: {cause}; give {wanted}"
    return f"{first}; `python -m jobs.{stage} --help` lists the groups and their options"


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides), so flags and overrides work in any order."""
    flags, overrides = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            overrides.append(arg)
        else:
            flags.append(arg)
            takes = arg in FLAGS_WITH_VALUE or (arg in ("--info", "-i") and i + 1 < len(args) and args[i + 1] in INFO_TOPICS)
            if takes and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        i += 1
    return flags, overrides


def check_config(cfg: Any) -> None:
    """What every stage checks before its own inputs: the schemas' ranges and extra keys, the
    budgets and the gateway settings."""
    check_settings(cfg)
    check_budget_config(cfg.budget)
    check_gateway_config(cfg.gateway)


def quiet_libraries() -> None:
    """Keep stage output to progress and results: HTTP clients log every request at INFO."""
    import logging

    for name in ("httpx", "httpx2", "httpcore", "openai", "LiteLLM", "litellm", "urllib3", "dspy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" under parallel scoring
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small download, in logs


def stopped_by_budget(stage: str) -> None:
    """Exit 2 naming the budget when the stage's gateway session crossed one."""
    from jobs.gateway import client as gateway

    if gateway.current is not None and gateway.current.spend().get("tripped"):
        fail(f"stage {stage} stopped: {gateway.current.last['tripped']}")


def stage_main(stage: str, check: Callable[[Any], None], run: Callable[[Any], Any]) -> Callable[[], Any]:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
    def _task(cfg: Any) -> Any:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        quiet_libraries()
        try:
            check_config(cfg)
            check(cfg)
            return run(cfg)
        except UserError as e:
            if multirun:  # one bad sweep point is reported; the sweep goes on
                print(f"error: {_one_line(str(e))}", file=sys.stderr, flush=True)
                return {"outcome": "bad_input", "error": _one_line(str(e))}
            fail(str(e))
        except IncompleteResult as e:
            stopped_by_budget(stage)
            fail(str(e), code=1)
        except Exception:
            stopped_by_budget(stage)  # a call the gateway refused may have broken the work
            raise
        return {}

    def main() -> Any:
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # unexpected errors: full traceback, exit 1
        flags, overrides = split_args(sys.argv[1:])
        if (quick := quick_error(overrides)) is not None:  # before the schemas are even registered
            fail(f"config: {quick}")
        register_schemas()
        if not any(o.startswith("hydra.job.name=") for o in overrides):
            overrides.append(f"hydra.job.name={stage}")  # the stage, not "entry": output dirs and sweep launchers use it
        overrides = with_user_configs(overrides)
        if not {"--shell-completion", "-sc", "--hydra-help", "--version"} & set(flags):
            check_overrides(overrides, stage)
        sys.argv[1:] = [*flags, *overrides]  # Hydra wants its flags before the overrides
        return _task()

    main.__doc__ = f"python -m jobs.{stage} [overrides]"
    return main
