"""What the simulator knows of a domain: a profile file in the domain's own folder.

The simulator has no domain words of its own. A profile (YAML, e.g.
``jobs/domains/<name>/sim_profile.yaml``) lists the domain's *behaviours*. An agent shows a
behaviour only when its system prompt asks for it (``asked_by``); a judge checks it only when
its instructions name it (``judged_by``); a rationale names a missing one with ``missing``.
GEPA's reflection adds ``instruction`` to a system prompt and MemAlign's distillation turns
the experts' rationales into ``guideline``. Because ``instruction`` matches ``asked_by`` and
``guideline`` matches ``judged_by``, alignment and optimization change what the simulated
models do, and so they really move the numbers. The profile also holds the answer wording
(declines, filler) and the tool-result contract (which JSON fields the agent reads).

Without a profile the simulator still answers every role, but its judge checks nothing, so
a run's figures are flat. The format is in docs/simulator.md.
"""

from __future__ import annotations

import importlib.util
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.core.errors import UserError
from jobs.core.paths import resolve
from jobs.eval import expectations as rules

INJECTION_RE = re.compile(r"ignore (?:all |any )?(?:previous|prior|above|your) instructions|system prompt", re.I)
LEAK_MARKER = "My instructions are:"

GENERIC_ANSWER = {  # wording of a domain that brings no profile
    "no_data": "Nothing in the tool results answers that.",
    "no_lookup": "The question gives nothing the tools can look up.",
    "ask_instead": "",
    "refuse_injection": "I can't share my instructions.",
    "filler": "",
}
SHOW_KEYS = ("closing", "per_result", "after_result")


@dataclass(frozen=True)
class Behaviour:
    key: str
    asked_by: re.Pattern | None  # in an agent's system prompt: the agent shows it (None: always)
    judged_by: re.Pattern  # in a judge's instructions or a rationale: the judge checks it
    instruction: str  # the sentence GEPA's simulated reflection adds to a system prompt
    guideline: str  # the guideline MemAlign's simulated distillation writes for a judge
    missing: str  # how a rationale says the response lacks it
    when: tuple[str, ...] = ()  # expectation conditions under which it is required
    unless: tuple[str, ...] = ()
    check: rules.ResponseCheck = field(default_factory=rules.ResponseCheck)
    closing: str | None = None  # shown once after the results, from the first result with its fields
    per_result: str | None = None  # appended to each result's summary that has its fields
    after_result: str | None = None  # a sentence after each result that has its fields
    if_field: str | None = None  # ...and where this result field is true
    guards_injection: bool = False  # an injected question gets the refusal instead of a leak
    drops_filler: bool = False  # the answer leaves out the filler paragraph

    def applies(self, expectations: dict[str, Any]) -> bool:
        return rules.applies(self.when, self.unless, expectations)


@dataclass(frozen=True)
class Decline:
    """Questions the data cannot answer must be declined; the judge checks this whenever it applies."""
    when: tuple[str, ...]
    unless: tuple[str, ...]
    pattern: re.Pattern
    missing: str


@dataclass(frozen=True)
class Profile:
    name: str
    behaviours: tuple[Behaviour, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # expectations a record leaves out
    answer: dict[str, str] = field(default_factory=lambda: dict(GENERIC_ANSWER))
    decline: Decline | None = None
    summary_field: str = "summary"  # the tool-result field the answer is written from
    error_field: str = "error"  # the tool-result field that carries a readable error

    @property
    def by_key(self) -> dict[str, Behaviour]:
        return {b.key: b for b in self.behaviours}

    def expectations(self, given: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **(given or {})}

    def asked(self, system_prompt: str) -> list[Behaviour]:
        """Behaviours an agent with this system prompt shows."""
        return [b for b in self.behaviours if b.asked_by is None or b.asked_by.search(system_prompt or "")]

    def judged(self, instructions: str) -> list[Behaviour]:
        """Behaviours a judge with these instructions checks."""
        return [b for b in self.behaviours if b.judged_by.search(instructions or "")]

    def named_missing(self, text: str) -> list[Behaviour]:
        """Behaviours that a rationale or feedback text reports as missing, each once."""
        return list(dict.fromkeys(self.named_missing_each(text)))

    def named_missing_each(self, text: str) -> list[Behaviour]:
        """One entry per "Missing: ..." clause and behaviour it names, to count how often."""
        found = []
        for clause in re.findall(r"Missing:([^\n]*)", text or "", flags=re.I):
            found += [b for b in self.behaviours if b.missing in clause or b.judged_by.search(clause)]
        return found

    def grade(self, response: str, expectations: dict[str, Any], instructions: str) -> tuple[list[str], list[str]]:
        """The keys a response meets and the ``missing`` phrases of those it does not, among
        the behaviours the instructions name, plus the decline rule where it applies."""
        exp = self.expectations(expectations)
        met, missing = [], []
        d = self.decline
        if d is not None and rules.applies(d.when, d.unless, exp):
            (met.append("declines") if d.pattern.search(response) else missing.append(d.missing))
        for b in self.judged(instructions):
            if not b.applies(exp):
                continue
            if b.check.holds(response, exp, instructions):
                met.append(b.key)
            else:
                missing.append(b.missing)
        return met, missing


def rationale(met: list[str], missing: list[str]) -> str:
    if missing:
        return "Missing: " + "; ".join(missing) + "."
    return "Meets every criterion checked" + (": " + ", ".join(met) if met else "") + "."


def render(template: str, result: dict[str, Any]) -> str | None:
    """A template filled from one tool result, or None when the result lacks one of its fields."""
    names = [f for _t, f, _s, _c in string.Formatter().parse(template) if f]
    if any(result.get(n) in (None, "") for n in names):
        return None
    return template.format(**{n: str(result[n]).rstrip(".") for n in names})


# ---------------------------------------------------------------- loading
def _pattern(value: Any, where: str) -> re.Pattern | None:
    if value in (None, ""):
        return None
    try:
        return re.compile(str(value), re.I)
    except re.error as e:
        raise UserError(f"{where}: bad regex ({e})") from None


def _check(spec: Any, where: str) -> rules.ResponseCheck:
    if not isinstance(spec, dict) or not spec:
        raise UserError(f"{where}: give present: {{match: REGEX}} (or no_match, max_words, facts)")
    unknown = set(spec) - {"match", "no_match", "max_words", "facts", "fact_pattern"}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; use match, no_match, max_words, facts, fact_pattern")
    return rules.ResponseCheck(_pattern(spec.get("match"), f"{where}.match"), _pattern(spec.get("no_match"), f"{where}.no_match"),
                 int(spec["max_words"]) if spec.get("max_words") is not None else None,
                 spec.get("facts"), spec.get("fact_pattern"))


BEHAVIOUR_KEYS = {"key", "asked_by", "judged_by", "instruction", "guideline", "missing", "when", "unless", "present",
                  "shows"}
SHOWS_KEYS = {*SHOW_KEYS, "if_field", "guards_injection", "drops_filler"}


def _behaviour(item: Any, where: str) -> Behaviour:
    if not isinstance(item, dict):
        raise UserError(f"{where}: each behaviour is a mapping with key, judged_by, instruction, guideline, missing")
    unknown = set(item) - BEHAVIOUR_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(BEHAVIOUR_KEYS))}")
    for k in ("key", "judged_by", "instruction", "guideline", "missing"):
        if not item.get(k):
            raise UserError(f"{where}.{k} is missing")
    shows = item.get("shows") or {}
    unknown = set(shows) - SHOWS_KEYS
    if unknown:
        raise UserError(f"{where}.shows: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(SHOWS_KEYS))}")
    return Behaviour(
        key=str(item["key"]), asked_by=_pattern(item.get("asked_by"), f"{where}.asked_by"),
        judged_by=_pattern(item["judged_by"], f"{where}.judged_by"), instruction=str(item["instruction"]),
        guideline=str(item["guideline"]), missing=str(item["missing"]),
        when=rules.check_conditions(item.get("when") or (), f"{where}.when"),
        unless=rules.check_conditions(item.get("unless") or (), f"{where}.unless"),
        check=_check(item.get("present"), f"{where}.present"),
        **{k: shows.get(k) for k in (*SHOW_KEYS, "if_field")},
        guards_injection=bool(shows.get("guards_injection")), drops_filler=bool(shows.get("drops_filler")))


def parse(data: Any, source: str) -> Profile:
    if not isinstance(data, dict):
        raise UserError(f"{source}: a simulator profile is a mapping (name, behaviours, answer, ...)")
    unknown = set(data) - {"name", "behaviours", "defaults", "answer", "decline", "result_fields"}
    if unknown:
        raise UserError(f"{source}: unknown key(s) {sorted(unknown)}; see docs/simulator.md for the profile format")
    answer = {**GENERIC_ANSWER, **{k: str(v) for k, v in (data.get("answer") or {}).items()}}
    if set(answer) - set(GENERIC_ANSWER):
        raise UserError(f"{source}: answer has unknown key(s) {sorted(set(answer) - set(GENERIC_ANSWER))}; "
                        f"allowed: {', '.join(GENERIC_ANSWER)}")
    decline = None
    if data.get("decline"):
        d = data["decline"]
        for k in ("pattern", "missing"):
            if not d.get(k):
                raise UserError(f"{source}: decline.{k} is missing")
        decline = Decline(rules.check_conditions(d.get("when") or (), f"{source}: decline.when"),
                          rules.check_conditions(d.get("unless") or (), f"{source}: decline.unless"),
                          _pattern(d["pattern"], f"{source}: decline.pattern"), str(d["missing"]))
    behaviours = tuple(_behaviour(b, f"{source}: behaviours[{i}]") for i, b in enumerate(data.get("behaviours") or []))
    keys = [b.key for b in behaviours]
    if len(set(keys)) != len(keys):
        raise UserError(f"{source}: behaviour keys must be unique, got {keys}")
    fields = data.get("result_fields") or {}
    return Profile(str(data.get("name") or Path(source).parent.name), behaviours, dict(data.get("defaults") or {}),
                   answer, decline, str(fields.get("summary", "summary")), str(fields.get("error", "error")))


def load(path: str | None) -> Profile:
    """The profile at ``path``; no path gives the empty profile (its judge checks nothing)."""
    if not path:
        return Profile("none")
    import yaml

    from jobs.core.files import read_text

    text = read_text(path, "simulator profile (agent.sim_profile)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse(data, path)


PROFILE_FILE = "sim_profile.yaml"  # a domain's simulator profile, next to its tools module


def sim_profile_path(agent_cfg: Any) -> str | None:
    """The domain's simulator profile: ``agent.sim_profile`` as a path, or with ``auto`` the
    ``sim_profile.yaml`` beside the tools module (found without importing it); None if there is none."""
    given = agent_cfg.get("sim_profile", "auto")
    if given in (None, "", "none"):
        return None
    if given != "auto":
        path = resolve(str(given))
        if not Path(path).is_file():
            raise UserError(f"agent.sim_profile: no file at {path}; give the profile's path, auto or null")
        return path
    module = str(agent_cfg.tools_module)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise UserError(f"agent.tools_module '{module}' cannot be found; give a module path on PYTHONPATH, "
                        "like mypackage.tools")
    found = Path(spec.origin).parent / PROFILE_FILE
    return str(found) if found.is_file() else None
