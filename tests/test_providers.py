"""Every model config a user can pick runs the whole pipeline (`python -m jobs.pipeline`, as
`make run` does) against the simulator over HTTP, through a gateway the pipeline starts in
front of ``model.base_url``, with a recognisable fake key. The gateway logs every request it
sends upstream, so the test checks what each client (langchain-openai for the agent, MLflow's
judge adapter, LiteLLM inside MemAlign and GEPA) sent for that provider.

``model=sim`` runs the whole pipeline in test_decision (the driver) and test_reliability.
``model=openai`` runs the second example domain, so a domain other than baseball goes end
to end too: its simulator is started here with the domain's own profile.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from jobs.core.paths import ROOT
from jobs.core.servers import start_sim, stop_process
from jobs.sim.roles import role_of
from tests.conftest import BASEBALL_PROFILE, FAKE_API_KEY, first_questions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPAT_MODELS = {"PROMPTGATE_AGENT_MODEL": "acme-agent-8b", "PROMPTGATE_JUDGE_MODEL": "acme-judge-8b",
                 "PROMPTGATE_REFLECTION_MODEL": "acme-reflect-70b", "PROMPTGATE_EMBEDDING_MODEL": "nomic-embed-text"}
OPENAI_MODELS = {"agent": "gpt-4o-mini", "judge": "gpt-4o-mini", "reflection": "gpt-4o",
                 "embedding": "text-embedding-3-small"}  # conf/model/openai.yaml
SHORT = ["compare.n_repeats=1"]  # one run per held-out question: the provider, not compare's figures, is the subject
HELDOUT_QUESTIONS = 12  # the first of the domain's held-out questions: both arms still judged, a decision still made


def run_pipeline(servers, tmp_path: Path, *overrides: str, heldout: str = "data/baseball/heldout.jsonl",
                 **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The pipeline with a gateway (and cache) of its own on the first questions of ``heldout``;
    returns the process and what went upstream."""
    misses = tmp_path / "upstream.jsonl"
    e = servers.env(OPENAI_API_KEY=FAKE_API_KEY, PROMPTGATE_GATEWAY_MISS_LOG=str(misses), **env)
    for own in ("PROMPTGATE_GATEWAY_URL", "PROMPTGATE_SIM_URL"):  # as on a user's machine: nothing running yet
        e.pop(own, None)
    short = [*SHORT, f"dataset.heldout={first_questions(tmp_path, HELDOUT_QUESTIONS, heldout)}"]
    proc = subprocess.run([sys.executable, "-m", "jobs.pipeline", f"gateway.cache_uri={tmp_path / 'cache'}", *short,
                           *overrides], env=e, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    servers.keep_log(f"pipeline {' '.join(overrides)}", proc.stdout, proc.stderr)
    sent = [json.loads(line) for line in misses.read_text().splitlines()] if misses.exists() else []
    return proc, sent


def models_by_role(sent: list[dict]) -> dict[str, set[str]]:
    """Which model names each kind of request carried upstream."""
    out: dict[str, set[str]] = {}
    for r in sent:
        body = r["body"]
        role = "embedding" if "input" in body else {"agent": "agent", "judge": "judge", "dspy": "judge"}.get(
            role_of(body), "reflection")
        out.setdefault(role, set()).add(body.get("model"))
    return out


def summary_of(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"pipeline failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout.split("=== promptgate pipeline")[1]


def decision_recorded(client, experiment: str, proc: subprocess.CompletedProcess) -> str:
    """The decision the pipeline's gate run recorded in MLflow."""
    from jobs.store import tracking

    pid = re.search(r"=== promptgate pipeline (\S+) ===", proc.stdout).group(1)
    run = tracking.latest_result(client.get_experiment_by_name(experiment).experiment_id, pid, "gate")
    return run.data.tags["promptgate.gate.decision"]


def test_openai_compatible_runs_the_whole_pipeline(servers, mlflow_client, tmp_path):
    prompt = f"compat-{uuid.uuid4().hex[:6]}"
    proc, sent = run_pipeline(servers, tmp_path, "model=openai_compatible", f"model.base_url={servers.sim_url}",
                              f"prompt.name={prompt}", **COMPAT_MODELS)
    summary = summary_of(proc)
    assert re.search(r"gate: (PROMOTED|REFUSED)", summary) and "aligned judge v" in summary, summary
    roles = models_by_role(sent)
    assert roles == {"agent": {"acme-agent-8b"}, "judge": {"acme-judge-8b"}, "reflection": {"acme-reflect-70b"},
                     "embedding": {"nomic-embed-text"}}, roles
    embeddings = [r["body"] for r in sent if "input" in r["body"]]
    # LiteLLM's openai provider refuses `dimensions` for a non-OpenAI model name; openai_like drops it
    assert embeddings and not any("dimensions" in b for b in embeddings)
    assert "SIMULATED RUN" not in proc.stdout  # not model=sim: no simulator banner
    table = summary.split("where the time and money went")[1]
    kinds = {k: int(n) for k, n in re.findall(r"^   (\w+)\s+(\d+)\s+[\d.]+\s+\d+%", table, re.M)}
    assert set(kinds) >= {"agent", "tools", "judge", "reflection", "embeddings"}, table  # the gateway told them apart
    assert all(n > 0 for n in kinds.values()) and "time by kind: agent" in summary
    assert decision_recorded(mlflow_client, "promptgate-baseball", proc) in ("promote", "refuse")


def test_openai_with_a_base_url_runs_the_second_domain(servers, mlflow_client, tmp_path):
    """model=openai (base URL overridden) on the shop-support domain: a categorical judge,
    expected_facts expectations, edge cases; agreement and the train score move."""
    sim, sim_url = start_sim({"seed": 7, "profile": str(ROOT / "jobs/domains/shop/sim_profile.yaml")})
    try:
        prompt = f"shop-{uuid.uuid4().hex[:6]}"
        proc, sent = run_pipeline(servers, tmp_path, "experiment=shop", "model=openai", f"model.base_url={sim_url}",
                                  f"prompt.name={prompt}", heldout="data/shop/heldout.jsonl")
    finally:
        stop_process(sim.pid)
    summary = summary_of(proc)
    roles = models_by_role(sent)
    assert roles == {k: {v} for k, v in OPENAI_MODELS.items()}, roles
    assert {r["body"].get("dimensions") for r in sent if "input" in r["body"]} == {256}  # OpenAI's models take it
    kappa = re.search(r"kappa ([\d.]+) -> ([\d.]+)", summary)
    assert kappa and float(kappa.group(2)) > float(kappa.group(1)), summary  # alignment moved agreement
    train = re.search(r"train score ([\d.]+) -> ([\d.]+)", summary)
    assert train and float(train.group(2)) > float(train.group(1)), summary  # GEPA moved the train score
    assert re.search(r"gate: (PROMOTED|REFUSED)", summary), summary
    assert decision_recorded(mlflow_client, "promptgate-shop", proc) in ("promote", "refuse")


LLAMA_CPP_LIKE = {"reject_json_schema": True, "tools_need_choice": True, "tool_turns_need_content": True,
                  "per_token_embeddings": True}  # the simulator as llama.cpp's server behaves (README, llama.cpp)


def test_llamacpp_config_runs_the_whole_pipeline_against_a_server_that_behaves_like_it(servers, mlflow_client,
                                                                                      tmp_path):
    """model=llamacpp (one model name for every role) against the simulator with llama.cpp's
    differences switched on: the gateway's capability rewrites carry every stage through, and
    nothing upstream is refused. The window check is lifted (model.context_tokens=null): the
    real server's 4k window makes optimize refuse, which `make test-llamacpp` shows."""
    sim, sim_url = start_sim({"seed": 7, "profile": BASEBALL_PROFILE, **LLAMA_CPP_LIKE})
    try:
        prompt = f"llama-{uuid.uuid4().hex[:6]}"
        proc, sent = run_pipeline(servers, tmp_path, "model=llamacpp", f"model.base_url={sim_url}",
                                  "model.context_tokens=null", f"prompt.name={prompt}")
        summary = summary_of(proc)
        assert re.search(r"gate: (PROMOTED|REFUSED)", summary), summary
        stats = json.loads(urllib.request.urlopen(sim_url.rsplit("/v1", 1)[0] + "/sim/stats", timeout=10).read())
    finally:
        stop_process(sim.pid)
    assert stats["faults"] == {} and stats["max_concurrency_seen"] == 1, stats  # no refusal; one request at a time
    bodies = [r["body"] for r in sent]
    assert not any((b.get("response_format") or {}).get("type") == "json_schema" for b in bodies)
    assert all(b.get("tool_choice") == "auto" for b in bodies if b.get("tools"))
    assert {b.get("model") for b in bodies} == {"smollm2-135m-instruct"}
    assert any("input" in b for b in bodies)  # MemAlign's embeddings went through, pooled per text
