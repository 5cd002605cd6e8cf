"""``python -m jobs.gateway --upstream URL``: run the LLM gateway; prints ``GATEWAY_URL=http://...`` once ready.

The upstream API key is read from the variable named by --api-key-env, never from the command line.
"""

from __future__ import annotations

import argparse
import os

from jobs.core.servers import serve_until_interrupted
from jobs.gateway.server import GatewaySettings, make_server


def main(argv: list[str] | None = None) -> None:
    d = GatewaySettings(upstream="")
    parser = argparse.ArgumentParser(prog="python -m jobs.gateway", description=__doc__)
    parser.add_argument("--upstream", default=os.environ.get("PROMPTGATE_UPSTREAM_URL"), help="upstream /v1 URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the upstream key")
    parser.add_argument("--cache-uri", default=os.environ.get("PROMPTGATE_CACHE_URI", d.cache_uri))
    parser.add_argument("--max-retries", type=int, default=d.max_retries)
    parser.add_argument("--backoff-s", type=float, default=d.backoff_s)
    parser.add_argument("--timeout-s", type=float, default=d.timeout_s)
    parser.add_argument("--retry-after-max-s", type=float, default=d.retry_after_max_s, help="longest Retry-After honoured")
    a = parser.parse_args(argv)
    if not a.upstream:
        parser.error("give --upstream (or PROMPTGATE_UPSTREAM_URL): the model endpoint's /v1 URL")
    settings = GatewaySettings(upstream=a.upstream, api_key=os.environ.get(a.api_key_env, ""), cache_uri=a.cache_uri,
                               max_retries=a.max_retries, backoff_s=a.backoff_s, timeout_s=a.timeout_s,
                               retry_after_max_s=a.retry_after_max_s)
    serve_until_interrupted(make_server(settings, a.host, a.port), "GATEWAY_URL")


if __name__ == "__main__":
    main()
