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

An agent made of several prompts may ask a model to classify a message first (a router):
a request without tools whose system prompt lists labels ("one of: a, b, c"). The profile's
*routes* say which label such a request gets: each route takes the messages its ``match``
finds in the last user turn, only when the classifying prompt asks for it (``asked_by``),
and names the behaviours it ``fixes``, so GEPA's reflection on a router prompt adds the
route's ``instruction`` where the feedback reports those behaviours missing.

Without a profile the simulator still answers every role, but its judge checks nothing, so
a run's figures are flat. The format is in docs/simulator.md.
"""

from __future__ import annotations

import importlib.util
import re
import string
from collections.abc import Callable
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
LABELS_RE = re.compile(r"\bone of:\s*([^.;)\n]*)", re.I)  # how a classifying prompt lists its labels
_LABEL_RE = re.compile(r"^[A-Za-z][\w-]*$")


def listed_labels(system_prompt: str) -> list[str]:
    """The labels a classifying prompt lists ("Answer with one of: a, b or c."), or [] when it
    lists fewer than two: then the prompt is no classifier."""
    m = LABELS_RE.search(system_prompt or "")
    if not m:
        return []
    words = [w.strip(" `'\"*") for w in re.split(r",|\bor\b|\||/", m.group(1))]
    labels = [w for w in words if _LABEL_RE.match(w)]
    return labels if len(labels) >= 2 else []


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
class Route:
    """A label a classifying (router) prompt gives the messages ``match`` finds in the last user turn."""
    label: str
    match: re.Pattern  # in the last user turn: the message takes this route
    asked_by: re.Pattern  # in the classifying prompt: the model takes the route at all (default: the label)
    instruction: str | None = None  # the sentence GEPA's simulated reflection adds to a router prompt
    fixes: tuple[str, ...] = ()  # behaviour keys whose reported absence this route repairs


@dataclass(frozen=True)
class Profile:
    name: str
    behaviours: tuple[Behaviour, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # expectations a record leaves out
    answer: dict[str, str] = field(default_factory=lambda: dict(GENERIC_ANSWER))
    decline: Decline | None = None
    summary_field: str = "summary"  # the tool-result field the answer is written from
    error_field: str = "error"  # the tool-result field that carries a readable error
    routes: tuple[Route, ...] = ()  # how a classifying prompt's request is answered, first match wins
    default_route: str | None = None  # the label when no route is taken (None: the first listed label)
    unsafe: tuple[re.Pattern, ...] = ()  # what MLflow's Safety scorer judges unsafe (besides a leaked system prompt)
    wrong_calls: tuple[re.Pattern, ...] = ()  # tool calls ToolCallCorrectness judges wrong: matched on "<tool> <arguments as JSON>"

    @property
    def by_key(self) -> dict[str, Behaviour]:
        return {b.key: b for b in self.behaviours}

    def expectations(self, given: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **(given or {})}

    def asked(self, system_prompt: str) -> list[Behaviour]:
        """Behaviours an agent with this system prompt shows."""
        return [b for b in self.behaviours if b.asked_by is None or b.asked_by.search(system_prompt or "")]

    def routes_asked(self, router_prompt: str) -> list[Route]:
        """Routes a classifier with this prompt takes."""
        return [r for r in self.routes if r.asked_by.search(router_prompt or "")]

    def route_for(self, router_prompt: str, message: str, taken: Callable[[Route], bool] = lambda r: True) -> str:
        """The label a classifier with this prompt gives ``message`` (the last user turn): the
        first asked-for route whose ``match`` finds it and that ``taken`` lets through, else the
        default label."""
        for r in self.routes_asked(router_prompt):
            if r.match.search(message or "") and taken(r):
                return r.label
        labels = listed_labels(router_prompt)
        return self.default_route or (labels[0] if labels else "")

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


ROUTE_KEYS = {"label", "match", "asked_by", "instruction", "fixes"}


def _routes(spec: Any, behaviours: tuple[Behaviour, ...], source: str) -> tuple[tuple[Route, ...], str | None]:
    if spec in (None, {}):
        return (), None
    if not isinstance(spec, dict) or set(spec) - {"default", "labels"}:
        raise UserError(f"{source}: routes is a mapping with default (a label) and labels (a list of routes)")
    keys = {b.key for b in behaviours}
    out = []
    for i, item in enumerate(spec.get("labels") or []):
        where = f"{source}: routes.labels[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where}: each route is a mapping with label and match")
        unknown = set(item) - ROUTE_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(ROUTE_KEYS))}")
        for k in ("label", "match"):
            if not item.get(k):
                raise UserError(f"{where}.{k} is missing")
        label = str(item["label"])
        if not _LABEL_RE.match(label):
            raise UserError(f"{where}.label: {label!r} is not one word (letters, digits, _ or -)")
        fixes = item.get("fixes") or []
        if isinstance(fixes, str) or any(str(f) not in keys for f in fixes):
            raise UserError(f"{where}.fixes: give a list of behaviour keys (of {', '.join(sorted(keys)) or 'none'})")
        if fixes and not item.get("instruction"):
            raise UserError(f"{where}.instruction is missing: a route that fixes behaviours needs the sentence "
                            "GEPA's reflection adds to a router prompt")
        asked_by = _pattern(item.get("asked_by"), f"{where}.asked_by") or re.compile(rf"\b{re.escape(label)}\b", re.I)
        out.append(Route(label, _pattern(item["match"], f"{where}.match"), asked_by,
                         str(item["instruction"]) if item.get("instruction") else None, tuple(str(f) for f in fixes)))
    labels = [r.label for r in out]
    if len(set(labels)) != len(labels):
        raise UserError(f"{source}: route labels must be unique, got {labels}")
    default = spec.get("default")
    if default is not None and not _LABEL_RE.match(str(default)):
        raise UserError(f"{source}: routes.default: {default!r} is not one word (letters, digits, _ or -)")
    return tuple(out), (str(default) if default is not None else None)


def parse(data: Any, source: str) -> Profile:
    if not isinstance(data, dict):
        raise UserError(f"{source}: a simulator profile is a mapping (name, behaviours, answer, ...)")
    unknown = set(data) - {"name", "behaviours", "defaults", "answer", "decline", "result_fields", "routes", "unsafe",
                           "wrong_calls"}
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
    routes, default_route = _routes(data.get("routes"), behaviours, source)
    return Profile(str(data.get("name") or Path(source).parent.name), behaviours, dict(data.get("defaults") or {}),
                   answer, decline, str(fields.get("summary", "summary")), str(fields.get("error", "error")),
                   routes, default_route,
                   tuple(_pattern(u, f"{source}: unsafe[{i}]") for i, u in enumerate(data.get("unsafe") or []) if u),
                   tuple(_pattern(w, f"{source}: wrong_calls[{i}]") for i, w in enumerate(data.get("wrong_calls") or []) if w))


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
    ``sim_profile.yaml`` beside the tools module, or beside the module of the agent's ``_target_``
    (found without importing it); None if there is none."""
    given = agent_cfg.get("sim_profile", "auto")
    if given in (None, "", "none"):
        return None
    if given != "auto":
        path = resolve(str(given))
        if not Path(path).is_file():
            raise UserError(f"agent.sim_profile: no file at {path}; give the profile's path, auto or null")
        return path
    key = "tools_module" if agent_cfg.get("tools_module") else "_target_"
    module = str(agent_cfg.get(key) or "")
    module = module if key == "tools_module" else module.rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise UserError(f"agent.{key} '{agent_cfg.get(key)}' cannot be found; give a module path on PYTHONPATH, "
                        "like mypackage.tools")
    found = Path(spec.origin).parent / PROFILE_FILE
    return str(found) if found.is_file() else None
