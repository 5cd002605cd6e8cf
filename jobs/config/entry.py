"""The one way a stage starts: check overrides, compose the config, run, map errors to exit codes.

A registered stage's module (jobs.core.contract.REGISTRY) defines ``check(cfg)`` (cheap
validation, no heavy imports) and ``run(ctx) -> StageResult`` (``ctx``: the StageContext
``stage_main`` builds once; ``finish`` records the result on the stage's run, which is how
launchers read it back). Its entrypoint is ``main = stage_main("name")``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import BooleanNode, FloatNode, IntegerNode, ListConfig

from jobs.config.schemas import check_settings, closest, register_schemas
from jobs.core.errors import IncompleteResult, Refused, UserError, exit_code, one_line
from jobs.core.paths import CONF_DIR
from jobs.gateway.client import check_budget_config, check_gateway_config

CONFIG_NAME = "pipeline"
# Hydra's flags that take a value, and --info's optional one: a copy of Hydra's argparse table
# (hydra._internal.utils.get_args_parser, private, so not read at run time); tests/test_config.py
# checks the copy against that parser, so a Hydra upgrade that changes a flag fails there.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                    "-cd", "--experimental-rerun"}
WANTED = {IntegerNode: "a whole number", FloatNode: "a number", BooleanNode: "true or false",
          ListConfig: "a list, like [a, b]"}  # what to give, by the OmegaConf node a value did not fit
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
        raise UserError(f"${CONFIG_PATH_ENV}: {', '.join(missing)} is not a folder; give the folder that holds your "
                        "config groups (experiment/, agent/, ...)")
    entries = ",".join(f"file://{os.path.abspath(f)}" for f in folders)
    return [*overrides, f"{SEARCHPATH}=[{entries}]"]


def check_overrides(overrides: list[str], stage: str = "pipeline") -> None:
    """Compose once with the plain overrides, so an unknown key, option or a wrong type is a
    UserError (exit 2) of one line that names it and the fix; then once per value of each sweep
    (``-m key=a,b``), whose points cannot compose either when a value is of the wrong type. A
    value out of range is left to its sweep point, which reports it while the others run."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schemas()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise UserError(f"bad override: {one_line(str(e))}; use key=value as in `python -m jobs.{stage} --cfg job`") from e
    plain = [o.input_line for o in parsed if not o.is_sweep_override()
             and (not o.key_or_group.startswith("hydra") or o.key_or_group == SEARCHPATH)]  # a user's config folders count
    if (quick := quick_error(plain)) is not None:
        raise UserError(one_line(f"config: {quick}"))
    try:
        check_settings(compose_plain(plain))
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(one_line(f"config: {config_error(e, plain, stage)}")) from e
    except UserError as e:
        raise UserError(one_line(f"config: {e}")) from e
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
                raise UserError(one_line(f"config: {config_error(e, point, stage)}")) from e


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
    """Hydra's error as one line: the key, option or value, and the fix. Told apart by the types
    and fields of Hydra's and OmegaConf's exceptions, never by parsing their wording:

    - MissingConfigException: ``missing_cfg_file`` ("group/option") and ``options``;
    - an override Hydra could not apply: a ConfigCompositionException whose ``__cause__`` is
      OmegaConf's error, with ``full_key`` (the first key that failed) and ``child_node`` (the
      node whose type the value did not fit). Hydra raises ConfigAttributeError/ConfigKeyError
      as "not a key" only for a plain ``key=value`` override, any other OmegaConf error as a
      value that does not fit; the override is the one whose key meets ``full_key``.

    Anything else is Hydra's first line and where to look."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, MissingConfigException):
        group, _, option = (e.missing_cfg_file or "").rpartition("/")
        options = [o for o in e.options or [] if not o.endswith("_schema")]  # the schemas an option extends are not options
        return f"{group}={option}: no such option; use one of {', '.join(options)}" if group and options else first
    cause = e.__cause__
    override = _failed_override(cause, overrides) if isinstance(cause, OmegaConfBaseException) else None
    if override is None:
        return f"{first}; `python -m jobs.{stage} --help` lists the groups and their options"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and not (override.is_add() or override.is_force_add()
                                                                         or override.is_delete()):
        key = max(override.key_or_group, str(cause.full_key), key=len)  # the override's key, or the dict's key in it
        rest = [o.input_line for o in _parsed(overrides) or [] if o.key_or_group != override.key_or_group]
        try:
            plain = compose_plain(rest)
            best = closest(key, config_keys(OmegaConf.to_container(plain, resolve=False)))
            open_dict = OmegaConf.get_type(OmegaConf.select(plain, override.key_or_group)) is dict
        except Exception:  # noqa: BLE001 - another override is broken too: no suggestion
            best, open_dict = None, False
        if open_dict and key != override.key_or_group:  # a map of the user's own keys, like prompt.companions
            return f"{key} is not a key yet; add it as +{key}=<value> (Hydra assigns no new key without +)"
        fix = f"did you mean {best}?" if best else f"`python -m jobs.{stage} --cfg job` prints every key"
        return f"{key} is not a key; {fix}"
    node = getattr(cause, "child_node", None)
    wanted = next((w for t, w in WANTED.items() if isinstance(node, t)), "a value of the key's type")
    reason = (str(cause).strip().splitlines() or [first])[0]  # OmegaConf's own line: the value and the type
    return f"{override.input_line}: {reason}; give {wanted}"


def _parsed(overrides: list[str]) -> list[Any] | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None


def _failed_override(cause: Any, overrides: list[str]) -> Any | None:
    """The override Hydra was applying when OmegaConf raised ``cause``: its key is the error's
    ``full_key``, or lies under it (a missing section, a scalar in the way), or, for a dict
    value, holds it. Hydra applies overrides in order, so the first that fits failed."""
    full_key = str(getattr(cause, "full_key", "") or "")
    parsed = [o for o in _parsed(overrides) or [] if o.input_line is not None]
    if not full_key:
        return None

    def under(key: str, prefix: str) -> bool:
        return key.startswith(prefix) and key[len(prefix):len(prefix) + 1] in (".", "[")

    for fits in (lambda o: o.key_or_group == full_key,
                 lambda o: under(o.key_or_group, full_key),
                 lambda o: isinstance(o.value(), dict) and under(full_key, o.key_or_group)):
        if (found := next((o for o in parsed if fits(o)), None)) is not None:
            return found
    return None


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


def stage_context(stage: str, cfg: Any, multirun: bool, pipeline_id: str) -> Any:
    """The StageContext of this process: its store connected once, its launch id read once from
    the environment the launcher gave it (the process boundary), its overrides for hints."""
    from hydra.core.hydra_config import HydraConfig

    from jobs.core.contract import LAUNCH_ENV
    from jobs.stages.context import StageContext
    from jobs.store.tracking import open_store

    return StageContext(stage=stage, cfg=cfg, pipeline_id=pipeline_id, force=bool(cfg.force),
                        store=open_store(cfg), launch_id=os.environ.get(LAUNCH_ENV) or None,
                        overrides=tuple(HydraConfig.get().overrides.task),
                        sweep_point=bool(cfg.get("sweep_point")) or multirun)


def budget_stop(ctx: Any) -> str | None:
    """Why the stage's gateway session stopped it, when it crossed a budget."""
    session = getattr(ctx, "session", None)
    return session.spend().get("tripped") if session is not None else None


EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def stop_on_interrupt(get_ctx: Callable[[], Any]) -> None:
    """Ctrl-C ends the stage within seconds: its runs FAILED, then exit 130 without waiting for
    MLflow's worker threads (a judge call retrying in one held the exit for over 50 s). The
    gateway and simulator a stage started exit with it (jobs.core.servers.exit_with_parent)."""
    import signal

    def interrupted(signum: int, frame: Any) -> None:
        ctx = get_ctx()
        print("\ninterrupted: marking the stage's run FAILED and exiting", file=sys.stderr, flush=True)
        if ctx is not None:
            try:
                from jobs.store.tracking import fail_active_runs

                fail_active_runs(ctx.store.experiment_id, ctx.pipeline_id, ctx.stage)
            except Exception as e:  # noqa: BLE001 - the exit must not wait on a server that is gone
                print(f"warning: could not mark the run FAILED ({one_line(e)}); a rerun ends it", file=sys.stderr)
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, interrupted)


def run_stage(stage: str, cfg: Any, multirun: bool) -> Any:
    """check, build the context, run; a broken call after a crossed budget is that budget's error."""
    from jobs.stages import load

    module = load(stage)
    quiet_libraries()
    ctx = None
    stop_on_interrupt(lambda: ctx)
    try:
        check_config(cfg)
        module.check(cfg)
        own_id = getattr(module, "pipeline_id", None)  # the monitor groups its runs under an id of its own
        ctx = stage_context(stage, cfg, multirun, own_id(cfg) if own_id else str(cfg.pipeline_id))
        return module.run(ctx)
    except (UserError, Refused):
        raise
    except Exception as e:  # a call the gateway refused may have broken the work
        if (tripped := budget_stop(ctx)) is not None:
            raise UserError(f"stage {stage} stopped: {tripped}") from e
        raise


def stage_main(stage: str) -> Callable[[], Any]:
    """The entrypoint of a registered stage (``main = stage_main("evaluate")``): check the
    overrides, compose, run, and turn an error into its exit code (jobs.core.errors)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
    def _task(cfg: Any) -> Any:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return run_stage(stage, cfg, multirun)
        except UserError as e:
            if multirun:  # one bad sweep point is reported; the sweep goes on
                print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
                return {"outcome": "bad_input", "error": one_line(e)}
            exit_with(e)
        except (IncompleteResult, Refused) as e:  # exits inside the task: Hydra adds no lines of its own
            exit_with(e)

    def main() -> Any:
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # anything unforeseen: the full traceback, exit 1
        try:
            sys.argv[1:] = hydra_argv(stage, sys.argv[1:])
        except UserError as e:
            exit_with(e)
        return _task()

    main.__doc__ = f"python -m jobs.{stage} [overrides]"
    return main


def exit_with(e: Exception) -> None:
    """End the command with the error's exit code: one ``error:`` line for bad input or lost
    rows; nothing more for a refusal, whose stage said why."""
    if not isinstance(e, Refused):
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(exit_code(e))


def hydra_argv(stage: str, args: list[str]) -> list[str]:
    """The command line as Hydra's parser wants it, after checking every override."""
    flags, overrides = split_args(args)
    if (quick := quick_error(overrides)) is not None:  # before the schemas are even registered
        raise UserError(f"config: {quick}")
    register_schemas()
    if not any(o.startswith("hydra.job.name=") for o in overrides):
        overrides.append(f"hydra.job.name={stage}")  # the stage, not "entry": output dirs and sweep launchers use it
    overrides = with_user_configs(overrides)
    if not {"--shell-completion", "-sc", "--hydra-help", "--version"} & set(flags):
        check_overrides(overrides, stage)
    return [*flags, *overrides]  # Hydra wants its flags before the overrides
