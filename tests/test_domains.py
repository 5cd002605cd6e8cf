"""Domains: each brings its tools module, configs and simulator profile; the simulator and
the stages know no domain by name; a user's domain lives outside this repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from jobs.core.errors import UserError
from jobs.core.paths import CONF_DIR, ROOT
from jobs.eval.judges import category_for
from jobs.llm import endpoints
from jobs.sim import profile as sim_profile
from jobs.sim import roles

JOBS = ROOT / "jobs"
DOMAINS = sorted(p.parent for p in (JOBS / "domains").glob("*/tools.py"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="pipeline", overrides=list(overrides))


def domain_words(folder: Path) -> set[str]:
    """The domain's name and its tools' names: what no code outside its folder may mention."""
    tools = re.findall(r"^def ([a-z]\w+)\(", (folder / "tools.py").read_text(), re.M)
    return {folder.name, *tools}


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda p: p.name)
def test_nothing_outside_a_domain_folder_knows_its_name(domain):
    words = domain_words(domain)
    found = []
    for path in JOBS.rglob("*"):
        if path.suffix not in (".py", ".yaml") or domain in path.parents:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(rf"\b{re.escape(w)}\b", line, re.I) for w in words):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda p: p.name)
def test_the_simulator_has_no_domain_wording(domain):
    profile = sim_profile.load(str(domain / "sim_profile.yaml"))
    code = "\n".join(p.read_text() for p in (JOBS / "sim").glob("*.py"))
    for text in [*profile.answer.values(), *(b.instruction for b in profile.behaviours)]:
        assert not text or text not in code, text


def test_both_example_domains_compose_with_their_own_parts():
    shop = compose_with("experiment=shop")
    assert (shop.agent.tools_module, shop.judge.feedback_value_type, shop.mlflow.experiment) == (
        "jobs.domains.shop.tools", "categorical", "promptgate-shop")
    assert "expected_facts" in shop.dataset.required_expectations
    assert any(c.get("must_state") == "expected_facts" for c in shop.feedback.criteria)


def test_a_domain_without_a_profile_says_its_figures_will_be_flat(capsys):
    cfg = compose_with("agent.sim_profile=null")
    assert endpoints.sim_settings(cfg)["profile"] == ""
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "cannot judge this domain's criteria" in out[0] and "flat" in out[0]
    assert endpoints.sim_settings(compose_with())["profile"].endswith("baseball/sim_profile.yaml")  # auto: beside tools


def test_without_a_profile_the_judge_checks_nothing():
    empty = sim_profile.load(None)
    assert empty.grade("anything at all", {"answerable": False}, "Check the recommendation.") == ([], [])
    answer = roles.final_answer(empty, "Give a recommendation.", "q", ['{"summary": "x is 3"}'], 7, 0.0)
    assert answer == "x is 3."  # the tool's summary and nothing a domain would add


@pytest.mark.parametrize("text,message", [
    ("- a list", "a simulator profile is a mapping"),
    ("colour: red", "unknown key(s) ['colour']"),
    ("behaviours: [{key: a}]", "behaviours[0].judged_by is missing"),
    ("behaviours: [{key: a, judged_by: '(', instruction: i, guideline: g, missing: m, present: {match: x}}]",
     "behaviours[0].judged_by: bad regex"),
    ("behaviours: [{key: a, judged_by: a, instruction: i, guideline: g, missing: m, present: {matches: x}}]",
     "behaviours[0].present: unknown key(s) ['matches']"),
    ("behaviours: [{key: a, judged_by: a, instruction: i, guideline: g, missing: m, present: {match: x}, when: a}]",
     "behaviours[0].when: give a list"),
    ("answer: {greeting: hi}", "answer has unknown key(s) ['greeting']"),
    # routes: how a router call is answered (an agent of several prompts)
    ("routes: [a]", "routes is a mapping with default"),
    ("routes: {labels: [{label: a}]}", "routes.labels[0].match is missing"),
    ("routes: {labels: [{label: 'two words', match: x}]}", "is not one word"),
    ("routes: {labels: [{label: a, match: '('}]}", "routes.labels[0].match: bad regex"),
    ("routes: {labels: [{label: a, match: x, fixes: [nope]}]}", "routes.labels[0].fixes: give a list of behaviour keys"),
    ("behaviours: [{key: b, judged_by: b, instruction: i, guideline: g, missing: m, present: {match: x}}]\n"
     "routes: {labels: [{label: a, match: x, fixes: [b]}]}", "routes.labels[0].instruction is missing"),
    ("routes: {labels: [{label: a, match: x}, {label: a, match: y}]}", "route labels must be unique"),
    ("routes: {labels: [{label: a, match: x, when: [y]}]}", "unknown key(s) ['when']"),
])
def test_a_bad_profile_is_named(tmp_path, text, message):
    path = tmp_path / "sim_profile.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        sim_profile.load(str(path))
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_the_shop_profile_drives_every_role():
    p = sim_profile.load(str(ROOT / "jobs/domains/shop/sim_profile.yaml"))
    result = json.dumps({"summary": "Order A-1 shipped on 2026-11-02 with DHL", "next_step": "follow the parcel",
                         "tracking": "DHL-123456"})
    plain = roles.final_answer(p, "End with the next step.", "Where is A-1?", [result], 7, 0.0)
    asked = roles.final_answer(p, "End with the next step. Give the tracking number.", "Where is A-1?", [result], 7, 0.0)
    assert "Next step: follow the parcel." in plain and "tracking number" not in plain
    assert "(tracking number DHL-123456)" in asked
    exp = {"topic": "shipping", "expected_facts": ["shipped on 2026-11-02", "DHL"]}
    base = "States each of the expected facts and ends with a next step."
    assert p.grade(plain, exp, base) == (["facts", "next_step"], [])
    assert p.grade(plain, exp, base + " Gives the tracking number.")[1] == ["gives no tracking number for a shipped order"]
    assert p.grade(plain, {**exp, "expected_facts": ["UPS"]}, base)[1] == ["does not state the expected facts"]
    assert category_for(["resolved", "partial", "unresolved"], 0.5) == "partial"
    declined = roles.final_answer(p, "x", "Where is Z-9?", [json.dumps({"error": "No order Z-9 in our records."})], 7, 0)
    assert p.grade(declined, {"topic": "unknown", "expected_facts": ["no order Z-9"]}, base) == (["declines", "facts"], [])


# ------------------------------------------------------------------ a user's domain outside the repo
LIBRARY_TOOLS = '''
"""A lending library's desk: a user's own tools module, outside promptgate's tree."""
import json
from typing import Annotated

BOOKS = {"978-0-14-044913-6": ("Crime and Punishment", 2, "shelf F2"), "978-0-452-28423-4": ("1984", 0, "shelf O1")}


def book_lookup(isbn: Annotated[str, "the book's ISBN, e.g. 978-0-14-044913-6"]) -> str:
    """Whether a book is on the shelves, and where."""
    book = BOOKS.get((isbn or "").strip())
    if book is None:
        return json.dumps({"error": f"No book with ISBN {isbn} in the catalogue."})
    title, copies, shelf = book
    return json.dumps({"summary": f"{title}: {copies} copies in", "shelf": shelf})


TOOLS = [book_lookup]
'''
LIBRARY_PROFILE = '''
name: library
answer: {no_data: "The catalogue has no answer to that.", ask_instead: "Please give the ISBN."}
decline: {when: [unknown], pattern: "no answer|please give", missing: answers what the catalogue cannot}
behaviours:
  - {key: shelf, asked_by: shelf, judged_by: shelf, instruction: Name the shelf., guideline: Must name the shelf.,
     missing: does not name the shelf, unless: [unknown], present: {match: "on shelf [A-Z]\\\\d"},
     shows: {per_result: " on {shelf}"}}
'''
LIBRARY_CONFIGS = {
    "agent/library.yaml": "tools_module: librarydesk.tools\ninput_key: question\nmax_steps: 3\nmax_retries: 1\n"
                          "sim_profile: auto\n",
    "judge/shelf_quality.yaml": "name: shelf_quality\ninstructions: 'Score {{ outputs }} for {{ inputs }}: it names the "
                                "shelf, or declines when {{ expectations }} says the book is unknown.'\n"
                                "feedback_value_type: float\ncategories: null\npass_threshold: 0.99\nmodel: null\n"
                                "scorers: []\n",
    "experiment/library.yaml": "# @package _global_\ndefaults:\n  - override /agent: library\n"
                               "  - override /judge: shelf_quality\n  - override /dataset: library\n"
                               "experiment_name: library\nprompt:\n  name: {prompt}\n  seed_text: You help readers "
                               "find books. Look the book up first.\n",
}
QUESTIONS = [("Is 978-0-14-044913-6 in?", {"unknown": False}), ("Do you have 978-0-452-28423-4?", {"unknown": False}),
             ("Have you got 978-1-111-11111-1?", {"unknown": True}), ("Where is book 978-0-14-044913-6 kept?", {"unknown": False})]


@pytest.fixture()
def library_domain(tmp_path):
    """A domain built only from a folder outside the repo: a tools package, configs, data."""
    pkg = tmp_path / "pkg" / "librarydesk"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tools.py").write_text(textwrap.dedent(LIBRARY_TOOLS))
    (pkg / "sim_profile.yaml").write_text(textwrap.dedent(LIBRARY_PROFILE))
    conf = tmp_path / "conf"
    prompt = f"library-{uuid.uuid4().hex[:6]}"
    for rel, text in LIBRARY_CONFIGS.items():
        (conf / rel).parent.mkdir(parents=True, exist_ok=True)
        (conf / rel).write_text(text.replace("{prompt}", prompt))
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "inputs": {"question": q}, "expectations": e}) + "\n"
                            for i, (q, e) in enumerate(QUESTIONS)))
    (conf / "dataset").mkdir(exist_ok=True)
    (conf / "dataset/library.yaml").write_text(f"train: {data}\nheldout: {data}\ninput_keys: [question]\n"
                                               "required_expectations: [unknown]\n")
    return tmp_path, prompt


@pytest.mark.integration
def test_a_domain_from_a_folder_outside_the_repo(servers, mlflow_client, library_domain):
    folder, prompt = library_domain
    pid = f"lib-{uuid.uuid4().hex[:6]}"
    env = servers.env(PYTHONPATH=f"{folder / 'pkg'}:{ROOT}")
    for own in ("PROMPTGATE_GATEWAY_URL", "PROMPTGATE_SIM_URL"):  # the stage starts a simulator with the user's profile
        env.pop(own)

    def stage(name: str, *overrides: str, **extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", f"jobs.{name}", "experiment=library", f"pipeline_id={pid}",
                               *overrides], env={**env, **extra}, cwd=folder, capture_output=True, text=True, timeout=600)
        servers.keep_log(f"library {name}", proc.stdout, proc.stderr)
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    stage("register", PROMPTGATE_CONFIG_PATH=str(folder / "conf"))  # the documented variable...
    proc = stage("evaluate", f"hydra.searchpath=[file://{folder / 'conf'}]")  # ...or Hydra's own search path
    assert "no simulator profile" not in proc.stdout  # found beside the user's tools module
    exp = mlflow_client.get_experiment_by_name("promptgate-library").experiment_id
    from jobs.store import tracking

    run = tracking.latest_result(exp, pid, "evaluate")
    assert run.data.metrics["scored"] == len(QUESTIONS)
    # the profile's judge checks the shelf, which the seed prompt does not ask for: known books fail, the unknown passes
    assert run.data.metrics["pass_rate"] == pytest.approx(1 / len(QUESTIONS))
    assert mlflow_client.get_prompt_version_by_alias(prompt, "production").template.startswith("You help readers")
