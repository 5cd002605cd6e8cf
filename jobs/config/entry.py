"""The one way a stage starts: check overrides, compose the config, run, map errors to exit codes.

A stage module defines ``check(cfg)`` (cheap validation, no heavy imports) and
``run(cfg) -> StageResult`` (jobs.core.results; ``finish`` records it on the stage's run,
which is how launchers read it back). Its entrypoint is ``main = stage_main("name", check, run)``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from jobs.config.schemas import register_schemas
from jobs.core.errors import EXIT_BAD_INPUT, IncompleteResult, UserError
from jobs.core.paths import CONF_DIR
from jobs.gateway.client import check_budget_config, check_gateway_config

CONFIG_NAME = "pipeline"
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


def check_overrides(overrides: list[str]) -> None:
    """Compose once with the plain overrides, so an unknown key or group is exit 2 with one line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schemas()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        fail(f"bad override: {e}; use key=value as in `python -m jobs.<stage> --cfg job`")
    plain = [o.input_line for o in parsed if not o.is_sweep_override()
             and (not o.key_or_group.startswith("hydra") or o.key_or_group == SEARCHPATH)]  # a user's config folders count
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name=CONFIG_NAME, overrides=plain)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"config: {first}; list the options with `python -m jobs.<stage> --help`")


def quiet_libraries() -> None:
    """Keep stage output to progress and results: HTTP clients log every request at INFO."""
    import logging

    for name in ("httpx", "httpx2", "httpcore", "openai", "LiteLLM", "litellm", "urllib3", "dspy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" under parallel scoring


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
            check_budget_config(cfg.budget)
            check_gateway_config(cfg.gateway)
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
        register_schemas()
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # unexpected errors: full traceback, exit 1
        if not any(a.startswith("hydra.job.name=") for a in sys.argv[1:]):
            sys.argv.append(f"hydra.job.name={stage}")  # the stage, not "entry": output dirs and sweep launchers use it
        sys.argv[1:] = with_user_configs(sys.argv[1:])
        args = sys.argv[1:]
        if not any(a.startswith("-") for a in args):
            check_overrides(args)
        elif any(a in ("-m", "--multirun") for a in args):
            check_overrides([a for a in args if not a.startswith("-")])
        return _task()

    main.__doc__ = f"python -m jobs.{stage} [overrides]"
    return main
