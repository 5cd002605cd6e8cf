"""``python -m jobs.sim --port 0``: run the simulator; prints ``SIM_URL=http://.../v1`` once ready."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from jobs.core.errors import UserError
from jobs.core.servers import serve_until_interrupted
from jobs.sim.server import SimSettings, make_server


def flag(text: str) -> bool:
    """A knob's yes or no as start_sim passes it (``True``/``False``) or a person types it."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: give true or false")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    for f in dataclasses.fields(SimSettings):
        kind = flag if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = parser.parse_args(argv)
    settings = SimSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimSettings)})
    try:
        server = make_server(args.host, args.port, settings)
    except UserError as e:  # a bad profile: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    serve_until_interrupted(server, "SIM_URL", "/v1")


if __name__ == "__main__":
    main()
