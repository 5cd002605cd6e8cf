"""How the simulator answers each kind of chat request. Pure functions of the request.

Roles, recognised in this order:

* ``agent``: the request carries ``tools``. With no tool results after the last user
  message it calls every tool whose required arguments it can fill from the question
  (see ``fill_arguments``); with tool results it writes the final answer from them.
* ``judge``: the ``response_format`` schema has a ``result`` field, or the system message
  is MLflow's judge prompt. It grades the response in the user message against the
  behaviours its instructions name and answers ``{"result", "rationale"}``.
* ``scorer``: one of MLflow's built-in judges (Safety, Guidelines, Correctness, ToolCallCorrectness, ...): the
  prompt asks for a ``result`` of "yes" or "no"; it gets that string, decided by the profile
  (see ``builtin_verdict``).
* ``memalign``: MemAlign's guideline distillation. It turns the "Missing: ..." clauses of
  the experts' rationales into guidelines, skipping those the judge already checks.
* ``gepa``: GEPA's reflection prompt. It adds to the current instruction the sentence for
  the behaviour that the feedback most often reports missing, between ``` fences.
* ``dspy``: a DSPy adapter prompt ("Your output fields are: ..."): it answers the declared
  output fields, as JSON when ``response_format`` asks for JSON and in DSPy's
  ``[[ ## field ## ]]`` form otherwise.
* ``route``: no tools, and a system prompt that lists labels ("one of: a, b, c"): a
  router's classification. It answers the label of the profile's first route that the prompt
  asks for and whose ``match`` finds the last user turn, else the default label.
* ``chat``: anything else gets a short echo.

Everything domain-specific (behaviours, answer wording, the tool-result fields) comes from
the domain's profile (``jobs/sim/profile.py``); every role takes it as its first argument.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

from jobs.eval import expectations as rules
from jobs.eval.judges import category_for
from jobs.sim.profile import INJECTION_RE, LEAK_MARKER, Profile, listed_labels, rationale, render


def unit_draw(*parts: Any) -> float:
    """A deterministic number in [0, 1) from the given parts."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


ROLES = ("agent", "memalign", "gepa", "dspy", "scorer", "judge", "route", "chat")  # what role_of tells apart


def role_of(req: dict[str, Any]) -> str:
    msgs = req.get("messages") or []
    system = "\n".join(text_of(m) for m in msgs if m.get("role") in ("system", "developer"))
    everything = "\n".join(text_of(m) for m in msgs)
    schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    if req.get("tools"):
        return "agent"
    if "distill a set of guidelines" in everything:
        return "memalign"
    if "I provided an assistant with" in everything and "```" in everything:
        return "gepa"
    if "Your output fields are" in system:
        return "dspy"
    if yes_no_prompt(everything) and "You are an expert judge" not in system:  # not a make_judge judge's prompt
        return "scorer"
    if "result" in (schema.get("properties") or {}) or "You are an expert judge" in system:
        return "judge"
    if listed_labels(system):
        return "route"
    return "chat"


# ---------------------------------------------------------------- agent
_CHOICES_RE = re.compile(r"one of:\s*([^.;)]*)", re.I)
_EXAMPLE_RE = re.compile(r"e\.g\.\s*([^,;)]+)", re.I)
_NAME = r"([A-Z][a-zA-Z'\-]+(?: [A-Z][a-zA-Z'\-]+)+)"


def _shape(example: str) -> str:
    out = []
    for ch in example.strip():
        out.append(r"\d" if ch.isdigit() else "[A-Za-z]" if ch.isalpha() else re.escape(ch))
    return "".join(out)


def _value_in(name: str, spec: dict[str, Any], text: str) -> Any:
    """One parameter's value as ``text`` gives it, or None (see fill_arguments)."""
    desc = spec.get("description", "")
    choices = spec.get("enum") or []
    m = _CHOICES_RE.search(desc)
    if m:
        choices = [c.strip() for c in m.group(1).split(",") if c.strip()]
    for choice in choices:
        if re.search(rf"\b{re.escape(str(choice))}", text, re.I):
            return choice
    m = re.search(rf"\b(?i:{name.replace('_', ' ')}) {_NAME}", text)
    if m:
        return m.group(1)
    m = _EXAMPLE_RE.search(desc)
    if m:
        found = re.search(_shape(m.group(1)), text)
        return found.group(0) if found else None
    return None


def fill_arguments(tool: dict[str, Any], question: str, earlier: list[str] | tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Arguments for a tool taken from the question, or None when a required one is absent.

    A parameter is filled, in this order, by the first of its described choices ("one of:
    low, high") that the question mentions; by the capitalised name that follows the
    parameter's own name in the question ("customer Ada Moreno"); or by text in the shape
    of its described example ("e.g. A-10234"). A parameter the question does not give is
    taken the same way from the ``earlier`` user turns of the conversation, latest first.
    """
    fn = tool.get("function", tool)
    params = fn.get("parameters") or {}
    args: dict[str, Any] = {}
    for name, spec in (params.get("properties") or {}).items():
        value = None
        for text in (question, *earlier):
            value = _value_in(name, spec, text)
            if value is not None:
                break
        if value is not None:
            args[name] = value
    if any(r not in args for r in params.get("required") or []):
        return None
    return args


def _last_user_index(msgs: list[dict[str, Any]]) -> int:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "user":
            return i
    return -1


def agent_reply(profile: Profile, req: dict[str, Any], seed: int, drop_rate: float) -> dict[str, Any]:
    msgs = req.get("messages") or []
    system = "\n".join(text_of(m) for m in msgs if m.get("role") in ("system", "developer"))
    last_user = _last_user_index(msgs)
    question = text_of(msgs[last_user]) if last_user >= 0 else ""
    results = [text_of(m) for m in msgs[last_user + 1 :] if m.get("role") == "tool"]
    earlier = [text_of(m) for m in reversed(msgs[:max(last_user, 0)]) if m.get("role") == "user"]
    if not results and not any(m.get("role") == "assistant" for m in msgs[last_user + 1 :]):
        calls = []
        if not INJECTION_RE.search(question):
            for i, tool in enumerate(req.get("tools") or []):
                args = fill_arguments(tool, question, earlier)
                if args is not None:
                    fn = tool.get("function", tool)
                    calls.append({
                        "id": f"call_{i}_{int(unit_draw(question, i) * 1e9)}",
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": json.dumps(args)},
                    })
        if calls:
            return {"role": "assistant", "content": None, "tool_calls": calls}
    return {"role": "assistant",
            "content": final_answer(profile, system, question, results, seed, drop_rate, req.get("seed"))}


def final_answer(profile: Profile, system: str, question: str, results: list[str], seed: int, drop_rate: float,
                 repeat: Any = None) -> str:
    shown = [b for b in profile.asked(system) if unit_draw(seed, b.key, question, system, repeat) >= drop_rate]
    words = profile.answer
    if INJECTION_RE.search(question):
        if any(b.guards_injection for b in shown):
            return words["refuse_injection"]
        return f"Sure. {LEAK_MARKER} {system[:120]}"
    parsed = []
    for r in results:
        try:
            parsed.append(json.loads(r))
        except (ValueError, TypeError):
            parsed.append({profile.summary_field: str(r)})
    parsed = [p if isinstance(p, dict) else {profile.summary_field: str(p)} for p in parsed]
    usable = [p for p in parsed if not p.get(profile.error_field)]
    errors = [str(p[profile.error_field]) for p in parsed if p.get(profile.error_field)]
    if not usable:
        reason = " ".join(errors) if errors else words["no_lookup"]
        return " ".join(x for x in (words["no_data"], reason, words["ask_instead"]) if x)
    parts = []
    for p in usable:
        line = str(p.get(profile.summary_field, "")).rstrip(".")
        line += "".join(filter(None, (render(b.per_result, p) for b in shown if b.per_result)))
        parts.append(line + ".")
        parts += [x for b in shown if b.after_result and (not b.if_field or p.get(b.if_field))
                  if (x := render(b.after_result, p))]
    for b in shown:
        if b.closing and (x := next(filter(None, (render(b.closing, p) for p in usable)), None)):
            parts.append(x)
    if words["filler"] and not any(b.drops_filler for b in shown):
        parts.append(words["filler"])
    return " ".join(parts)


# ---------------------------------------------------------------- judge
def _field_block(text: str, name: str) -> str:
    """The value after ``name:`` in MLflow's judge user message (up to the next field)."""
    m = re.search(rf"(?:^|\n){name}:\s*(.*?)(?=\n(?:inputs|outputs|expectations|trace|conversation):|\Z)", text, re.S)
    return m.group(1).strip() if m else ""


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def _response_text(outputs: Any) -> str:
    if isinstance(outputs, dict):
        for key in ("response", "output", "answer", "content", "text"):
            if isinstance(outputs.get(key), str):
                return outputs[key]
        return json.dumps(outputs)
    return outputs if isinstance(outputs, str) else json.dumps(outputs)


def judge_verdict(profile: Profile, instructions: str, user_text: str) -> tuple[bool, float, str]:
    outputs = _loads(_field_block(user_text, "outputs"))
    expectations = _loads(_field_block(user_text, "expectations"))
    if not isinstance(expectations, dict):
        expectations = {}
    met, missing = profile.grade(_response_text(outputs), expectations, instructions)
    total = len(met) + len(missing)
    return not missing, (len(met) / total if total else 1.0), rationale(met, missing)


_SCALE_RE = re.compile(r"scale (?:of|from) (-?\d+(?:\.\d+)?) (?:to|-) (-?\d+(?:\.\d+)?)", re.I)


def on_declared_scale(score: float, instructions: str, result_spec: dict[str, Any] | None = None) -> float:
    """A 0..1 score placed on the scale the request declares: the response schema's
    ``minimum``/``maximum`` for ``result``, else a "scale from <low> to <high>" sentence in the
    judge's instructions; 0..1 when neither states one. The request is all it knows."""
    spec = result_spec or {}
    if isinstance(spec.get("minimum"), (int, float)) and isinstance(spec.get("maximum"), (int, float)):
        low, high = float(spec["minimum"]), float(spec["maximum"])
    elif m := _SCALE_RE.search(instructions or ""):
        low, high = float(m.group(1)), float(m.group(2))
    else:
        return round(score, 3)
    return round(low + score * (high - low), 3) if low < high else round(score, 3)


def _instructions(system: str) -> str:
    # Judge criteria are read from the instructions only, not from MLflow's boilerplate.
    m = re.search(r"Your task:(.*)", system, re.S)
    body = m.group(1) if m else system
    return body.split("You *must* format your evaluation rating")[0]


def judge_reply(profile: Profile, req: dict[str, Any]) -> str:
    msgs = req.get("messages") or []
    system = "\n".join(text_of(m) for m in msgs if m.get("role") == "system")
    user = "\n".join(text_of(m) for m in msgs if m.get("role") == "user")
    passed, score, why = judge_verdict(profile, _instructions(system), user)
    schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    result_spec = (schema.get("properties") or {}).get("result") or {}
    kind = result_spec.get("type")
    if result_spec.get("enum"):
        value: Any = category_for(result_spec["enum"], score)
    elif kind in ("number", "integer") or re.search(r"result \((?:float|int)", system):
        value = on_declared_scale(score, _instructions(system), result_spec)
    else:
        value = passed
    return json.dumps({"result": value, "rationale": why})


# ---------------------------------------------------------------- MLflow's built-in judges
# MLflow's built-in scorers (Safety, Guidelines, ExpectationsGuidelines, Correctness,
# RelevanceToQuery, RetrievalGroundedness, ToolCallCorrectness, ToolCallEfficiency) send one prompt that asks for
# ``{"rationale": ..., "result": "yes|no"}`` and parse ``result`` as a CategoricalRating, so
# they get the string "yes" or "no", never a bool. Each is told apart by the tags its prompt
# wraps the text in; the verdicts come from the profile, as the domain judge's do.
_YES_NO_RE = re.compile(r'"result":\s*"[^"\n]*\byes\b[^"\n]*\bno\b', re.I)


def yes_no_prompt(text: str) -> bool:
    """Whether ``text`` is a built-in judge's prompt: it asks for a ``result`` of yes or no."""
    return _YES_NO_RE.search(text or "") is not None


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return m.group(1).strip() if m else None


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", (text or "").lower()) if len(w) > 3}


def unsafe(profile: Profile, text: str) -> str | None:
    """Why ``text`` is unsafe for the profile, or None: it leaks the system prompt, or it
    matches one of the profile's ``unsafe`` patterns."""
    if LEAK_MARKER in (text or ""):
        return "the response reveals the system prompt"
    for p in profile.unsafe:
        if p.search(text or ""):
            return f"the response matches the unsafe pattern {p.pattern!r}"
    return None


# ToolCallCorrectness and ToolCallEfficiency show the agent's calls as MLflow's
# ``format_tools_called`` writes them, the tools it had as ``format_available_tools`` does.
_CALL_RE = re.compile(r"Tool Call \d+: (\S+)\n  Input Arguments: (.*?)\n  Output: (.*?)(?=\n+Tool Call \d+: |\Z)", re.S)
_EXPECTED_RE = re.compile(r"Expected Tool(?: Call)? \d+: (\S+)(?:\n  Arguments: (.*?))?(?=\nExpected Tool|\Z)", re.S)


def _arguments(text: str | None) -> dict[str, Any] | None:
    """A call's arguments as MLflow prints them (a dict's repr, or JSON); None when empty or unreadable."""
    import ast

    text = (text or "").strip()
    if not text or text == "empty":
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
        return value if isinstance(value, dict) else None
    return None


def tool_calls(block: str) -> list[tuple[str, dict[str, Any], str]]:
    """(name, arguments, output) of each call in a ``<tools_called>`` block."""
    return [(m.group(1), _arguments(m.group(2)) or {}, m.group(3)) for m in _CALL_RE.finditer(block or "")]


def _same(a: Any, b: Any) -> bool:
    return str(a).strip().lower() == str(b).strip().lower()


def _failed(profile: Profile, output: str) -> bool:
    """Whether a tool's output carries the profile's readable error (``result_fields.error``) or
    an exception: a retry of it is no redundancy."""
    field = re.escape(profile.error_field)
    return "Exception:" in output or re.search(
        rf"""\\?["']{field}\\?["']\s*:\s*(?!null|None|false|""|'')\S""", output) is not None


def tool_call_verdict(profile: Profile, prompt: str) -> tuple[bool, str] | None:
    """ToolCallCorrectness's or ToolCallEfficiency's verdict, or None when ``prompt`` is neither.

    Correctness, with expected calls (``expectations.expected_tool_calls``): the same tool names,
    and each expected call's arguments (when given) in a call of that name. Without them (the
    trace alone): every call names an available tool, every string argument is found in the
    request (the simulated agent fills arguments from the question), no call answers a prompt
    injection, and no call matches the profile's ``wrong_calls``. Efficiency: no call repeats
    an earlier one's tool and arguments, unless the earlier one failed (its output carries the
    profile's error field, or an exception)."""
    actual = _tag(prompt, "actual_tool_calls")
    if actual is not None and _tag(prompt, "available_tools") is not None:
        calls = tool_calls(actual)
        expected = _tag(prompt, "expected_tool_calls")
        if expected is not None:
            want = [(m.group(1), _arguments(m.group(2))) for m in _EXPECTED_RE.finditer(expected)]
            names, wanted = sorted(c[0] for c in calls), sorted(w[0] for w in want)
            if names != wanted:
                return False, f"The agent called {names or 'no tool'}; expected {wanted or 'no tool'}."
            for name, args in want:
                if args and not any(c[0] == name and all(_same(c[1].get(k), v) for k, v in args.items()) for c in calls):
                    return False, f"No call of {name} has the expected arguments {json.dumps(args)}."
            return True, "The tool calls match the expected ones."
        request = _tag(prompt, "request") or ""
        available = set(re.findall(r"^- ([^\s:]+)", _tag(prompt, "available_tools") or "", re.M))
        problems = []
        if calls and INJECTION_RE.search(request):
            problems.append("the request is a prompt injection, yet the agent called tools")
        for name, args, _out in calls:
            if available and name not in available:
                problems.append(f"{name} is not an available tool")
            problems += [f"{name} argument {k}={v!r} is not in the request" for k, v in args.items()
                         if isinstance(v, str) and v.strip() and v.strip().lower() not in request.lower()]
            line = f"{name} {json.dumps(args, sort_keys=True)}"
            problems += [f"{name} matches the profile's wrong call {p.pattern!r}" for p in profile.wrong_calls
                         if p.search(line)]
        if problems:
            return False, "Incorrect tool calls: " + "; ".join(dict.fromkeys(problems)) + "."
        return True, (f"Each of the {len(calls)} tool calls suits the request and its arguments come from it."
                      if calls else "No tool was called, and no call is wrong.")
    called = _tag(prompt, "tools_called")
    if called is not None and _tag(prompt, "available_tools") is not None:
        seen: dict[str, str] = {}
        redundant = []
        for name, args, out in tool_calls(called):
            key = f"{name} {json.dumps(args, sort_keys=True, default=str)}"
            if key in seen and not _failed(profile, seen[key]):
                redundant.append(key)
            seen[key] = out
        if redundant:
            return False, "Redundant tool calls: " + "; ".join(dict.fromkeys(redundant)) + " repeat earlier calls."
        return True, "No tool call repeats another; the tool usage is efficient."
    return None


def builtin_verdict(profile: Profile, prompt: str) -> tuple[bool, str]:
    """The verdict (yes?) and the reason of a built-in judge's ``prompt``."""
    if (verdict := tool_call_verdict(profile, prompt)) is not None:  # ToolCallCorrectness, ToolCallEfficiency
        return verdict
    guidelines = _tag(prompt, "guidelines")
    if guidelines is not None:  # Guidelines, ExpectationsGuidelines
        context = prompt.split("</guidelines>", 1)[-1]
        response = _tag(context, "response") or _tag(context, "outputs") or context
        exp = profile.expectations({})
        missing = []
        for g in re.findall(r"<guideline>(.*?)</guideline>", guidelines, re.S) or [guidelines]:
            # a guideline has no expectations to go by: an injection guard holds for every reply
            missing += [b.missing for b in profile.judged(g) if (b.applies(exp) or b.guards_injection)
                        and not b.check.holds(response, exp, g)]
            if (why := unsafe(profile, response)) and profile.judged(g) == [] and re.search(r"\bsafe|harm|leak", g, re.I):
                missing.append(why)
        if missing:
            return False, "Missing: " + "; ".join(dict.fromkeys(missing)) + "."
        return True, "Every guideline that applies is met."
    claim = _tag(prompt, "claim")
    document = _tag(prompt, "document")
    if claim is not None and document is not None:
        answer = _tag(claim, "answer")
        if answer is not None:  # RetrievalGroundedness: the answer's words are in the retrieved document
            unsupported = sorted(_words(answer) - _words(document) - _words(_tag(claim, "question") or ""))
            if len(unsupported) > max(3, len(_words(answer)) // 2):
                return False, "Not supported by the document: " + ", ".join(unsupported[:8]) + "."
            return True, "The answer is supported by the retrieved document."
        facts = [f.strip() for f in re.split(r"\n\s*-\s+", "\n" + claim) if f.strip()]  # Correctness
        unstated = [f for f in facts if not rules.fact_stated(f, document)]
        if unstated:
            return False, "The response is not correct. Not stated: " + "; ".join(unstated) + "."
        return True, "The response is correct: it states " + ("; ".join(facts) or "nothing asked") + "."
    question, answer = _tag(prompt, "question"), _tag(prompt, "answer")
    if question is not None and answer is not None:  # RelevanceToQuery
        if unsafe(profile, answer) or not answer.strip():
            return False, "The answer does not address the question."
        return True, "The answer addresses the question."
    text = _tag(prompt, "text")  # Safety
    why = unsafe(profile, text if text is not None else prompt)
    return (False, f"Unsafe: {why}.") if why else (True, "The content is safe.")


def scorer_reply(profile: Profile, req: dict[str, Any]) -> str:
    """A built-in MLflow judge's verdict: ``{"rationale", "result": "yes" | "no"}``."""
    ok, why = builtin_verdict(profile, "\n".join(text_of(m) for m in req.get("messages") or []))
    return json.dumps({"rationale": f"Let's think step by step. {why}", "result": "yes" if ok else "no"})


# ---------------------------------------------------------------- reflection roles
def memalign_reply(profile: Profile, req: dict[str, Any]) -> str:
    text = "\n".join(text_of(m) for m in req.get("messages") or [])
    head, _, examples = text.partition("Here are the user judgement examples:")
    existing_block = head.split("Here are the existing guidelines")[-1]
    already = {b.key for b in profile.judged(head)} | {b.key for b in profile.judged(existing_block)}
    sources: dict[str, list[int]] = {}
    for m in re.finditer(r'"id":\s*(\d+),(.*?)(?=\n\{\s*\n\s*"id":|\Z)', examples, re.S):
        for b in profile.named_missing(m.group(2)):
            if b.key not in already:
                sources.setdefault(b.key, []).append(int(m.group(1)))
    return json.dumps({
        "guidelines": [
            {"guideline_text": profile.by_key[k].guideline, "source_trace_ids": ids} for k, ids in sources.items()
        ]
    })


def gepa_reply(profile: Profile, req: dict[str, Any]) -> str:
    """GEPA reflects on one prompt (one component) at a time. A classifying (router) prompt,
    one that lists labels, gets the instruction of the route that fixes the behaviours the
    feedback most often reports missing; any other prompt gets the instruction of the most
    often missing behaviour it does not ask for yet. One sentence per reflection."""
    text = "\n".join(text_of(m) for m in req.get("messages") or [])
    fences = text.split("```")
    current = fences[1].strip("\n") if len(fences) > 2 else ""
    feedback = "```".join(fences[3:4]) if len(fences) > 4 else text
    counts = Counter(b.key for b in profile.named_missing_each(feedback))
    if profile.routes and listed_labels(current):
        taken = {r.label for r in profile.routes_asked(current)}
        fixing = [(sum(counts[k] for k in r.fixes), i, r) for i, r in enumerate(profile.routes)
                  if r.instruction and r.label not in taken]
        best = max(fixing, key=lambda t: (t[0], -t[1]), default=None)
        if best is not None and best[0] > 0:
            current = current.rstrip() + " " + best[2].instruction
        return f"```\n{current.strip()}\n```"
    shown = {b.key for b in profile.asked(current)}
    for key, _n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if key not in shown:
            current = current.rstrip() + " " + profile.by_key[key].instruction
            break
    return f"```\n{current.strip()}\n```"


def route_reply(profile: Profile, req: dict[str, Any], seed: int, drop_rate: float) -> str:
    """A router's label for the last user turn. An asked-for route is still missed with
    probability ``drop_rate``, drawn as a behaviour's drop is; JSON when ``response_format``
    asks for it (``{"<first schema property, or label>": label}``)."""
    msgs = req.get("messages") or []
    system = "\n".join(text_of(m) for m in msgs if m.get("role") in ("system", "developer"))
    last_user = _last_user_index(msgs)
    message = text_of(msgs[last_user]) if last_user >= 0 else ""
    label = profile.route_for(system, message, lambda r: unit_draw(
        seed, "route", r.label, message, system, req.get("seed")) >= drop_rate)
    fmt = req.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        props = list(((fmt.get("json_schema") or {}).get("schema") or {}).get("properties") or {})
        return json.dumps({(props[0] if props else "label"): label})
    return label


def dspy_reply(profile: Profile, req: dict[str, Any]) -> str:
    msgs = req.get("messages") or []
    system = "\n".join(text_of(m) for m in msgs if m.get("role") == "system")
    user = "\n".join(text_of(m) for m in msgs if m.get("role") == "user")
    out_section = system.split("Your output fields are:")[-1].split("All interactions")[0]
    fields = re.findall(r"\d+\.\s*`(\w+)`", out_section) or ["answer"]
    values: dict[str, Any] = {}
    if "result" in fields:
        instr = system.split("Your objective is:")[-1] if "Your objective is:" in system else system
        passed, score, why = judge_verdict(profile, instr, user.replace("[[ ## ", "\n").replace(" ## ]]", ":"))
        kind = re.search(r"`result` \(([^)]*)\)", out_section)
        kind_text = kind.group(1) if kind else ""
        options = re.findall(r"'([^']*)'", kind_text) if kind_text.startswith("Literal") else []
        value: Any = category_for(options, score) if options else \
            on_declared_scale(score, instr) if kind_text in ("float", "int") else passed
        values = {"result": value, "rationale": why}
    for f in fields:
        values.setdefault(f, "n/a")
    if (req.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return json.dumps(values)
    return "\n\n".join(f"[[ ## {f} ## ]]\n{values[f]}" for f in fields) + "\n\n[[ ## completed ## ]]"


def chat_reply(_profile: Profile, req: dict[str, Any]) -> str:
    msgs = req.get("messages") or []
    last = text_of(msgs[-1]) if msgs else ""
    if (req.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return json.dumps({"answer": last[:200]})
    return f"(simulated) {last[:200]}"
