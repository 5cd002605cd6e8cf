"""The package has no import cycles, counting imports inside functions (which hide a cycle
from Python but not from a reader): shared names live in the leaf module jobs/core/contract.py."""

from __future__ import annotations

import ast

from jobs.core.paths import ROOT


def import_graph(package: str = "jobs") -> dict[str, set[str]]:
    root = ROOT / package
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[module] |= {n for n in names if n in modules and n not in (module, module.rsplit(".", 1)[0])}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


COMMANDS = {"jobs.pipeline", *(f"jobs.{s}" for s in ("register", "evaluate", "feedback", "align", "optimize", "compare", "gate"))}
# What each room may not import: rooms lower down never reach up to the ones that use them.
FORBIDDEN = {
    "jobs.core": ("jobs.",),  # core imports only core (checked below with its own prefix)
    "jobs.eval": ("jobs.stages", "jobs.launch", "jobs.config", *COMMANDS),
    "jobs.store": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", *COMMANDS),
    "jobs.llm": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", "jobs.store", *COMMANDS),
    "jobs.gateway": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", "jobs.store", "jobs.llm", *COMMANDS),
    "jobs.sim": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.store", "jobs.llm", "jobs.gateway", *COMMANDS),
    "jobs.stages": ("jobs.launch", *COMMANDS),
    "jobs.domains": ("jobs.",),  # a domain is configs and one tools module: it needs nothing of ours
}


def reaches_up(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in sorted(graph.items()):
        for room, banned in FORBIDDEN.items():
            if module != room and not module.startswith(room + "."):
                continue
            for name in sorted(imported):
                if room in ("jobs.core", "jobs.domains") and name.startswith(room):
                    continue
                if any(name == b or name.startswith(b if b.endswith(".") else b + ".") or name == b.rstrip(".") for b in banned):
                    wrong.append(f"{module} imports {name}")
    return wrong


def test_rooms_import_only_downwards():
    wrong = reaches_up(import_graph())
    assert not wrong, "\n".join(wrong)


def test_the_room_check_sees_a_wrong_import():
    assert reaches_up({"jobs.eval.stats": {"jobs.stages.gate"}, "jobs.core.paths": {"jobs.eval.stats"}}) == [
        "jobs.core.paths imports jobs.eval.stats", "jobs.eval.stats imports jobs.stages.gate"]
