"""Named pause points for the kill-and-rerun tests: with ``PROMPTGATE_PAUSE_AT=<point>`` a
stage prints ``PAUSED AT <point>`` and waits there, so a test can SIGKILL it at the most
awkward moment (after a write, before the result is recorded). Unset, it does nothing."""

from __future__ import annotations

import os
import time

PAUSE_ENV = "PROMPTGATE_PAUSE_AT"
POINTS = ("evaluate.scored", "feedback.first_label", "optimize.registered", "gate.decided",
          "<stage>.shard-<index>.scored")


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        print(f"PAUSED AT {name}", flush=True)
        time.sleep(3600)
