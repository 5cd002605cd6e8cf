"""The pipeline's config composed outside a Hydra app (the driver, the manifest renderer), and
new pipeline ids."""

from __future__ import annotations

import time
import uuid
from typing import Any


def new_pipeline_id() -> str:
    return time.strftime("pg-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def compose(overrides: list[str]) -> Any:
    """The config for these overrides (with the user's config folders); UserError, one line, on
    a bad override."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from jobs.config.entry import CONFIG_NAME, check_overrides, with_user_configs
    from jobs.core.paths import CONF_DIR

    overrides = with_user_configs(overrides)
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
