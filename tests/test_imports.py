"""The package has no import cycles, counting imports inside functions (which hide a cycle
from Python but not from a reader): shared names live in the leaf module jobs/core/contract.py."""

from __future__ import annotations

import ast
from pathlib import Path

from jobs.core.contract import REGISTRY
from jobs.core.paths import ROOT


def modules(package: str = "jobs") -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / package).rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function: ``a.b`` and ``a.b.name``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def import_graph(package: str = "jobs") -> dict[str, set[str]]:
    found = modules(package)
    return {module: {n for n in imported_names(path) if n in found and n not in (module, module.rsplit(".", 1)[0])}
            for module, path in found.items()}


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


def commands() -> set[str]:
    """The package's commands: every module of jobs/ itself with a ``__main__`` block (the stages'
    entrypoints, the pipeline driver), found, not listed."""
    return {f"jobs.{p.stem}" for p in (ROOT / "jobs").glob("*.py") if "__name__ == \"__main__\"" in p.read_text()}


COMMANDS = commands()
# What each room may not import: rooms lower down never reach up to the ones that use them.
FORBIDDEN = {
    "jobs.core": ("jobs.",),  # core imports only core (checked below with its own prefix)
    "jobs.eval": ("jobs.stages", "jobs.launch", "jobs.config", *COMMANDS),
    "jobs.store": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", *COMMANDS),
    "jobs.llm": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", "jobs.store", *COMMANDS),
    "jobs.gateway": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.eval", "jobs.store", "jobs.llm", *COMMANDS),
    "jobs.sim": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.store", "jobs.llm", "jobs.gateway", *COMMANDS),
    "jobs.stages": ("jobs.launch", *COMMANDS),
    "jobs.launch": ("jobs.pipeline",),  # the driver uses the launchers, never the other way
    "jobs.agents": ("jobs.stages", "jobs.launch", "jobs.config", "jobs.store", "jobs.llm", "jobs.gateway", "jobs.eval",
                    *COMMANDS),  # an agent is a factory of the contract: it needs only core
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


def test_the_commands_are_found_not_listed():
    assert {s.command for s in REGISTRY} | {"jobs.pipeline"} <= COMMANDS
    assert "jobs.monitor" in COMMANDS and "jobs.traffic" in COMMANDS


def test_the_room_check_sees_the_launchers_reach_for_the_driver():
    assert reaches_up({"jobs.launch.render": {"jobs.pipeline"}}) == ["jobs.launch.render imports jobs.pipeline"]


STAGE_MODULES = {s.module for s in REGISTRY}


def stage_imports_stage(graph: dict[str, set[str]]) -> list[str]:
    """A stage module importing another stage's module: shared help lives in common, shards,
    context or below."""
    return sorted(f"{m} imports {n}" for m in STAGE_MODULES & graph.keys() for n in graph[m] & STAGE_MODULES)


def test_no_stage_imports_another_stage():
    wrong = stage_imports_stage(import_graph())
    assert not wrong, "\n".join(wrong)


def test_the_stage_check_sees_a_stage_importing_a_stage():
    assert stage_imports_stage({"jobs.stages.gate": {"jobs.stages.align", "jobs.stages.common"}}) == [
        "jobs.stages.gate imports jobs.stages.align"]


MLFLOW_ROOMS = ("jobs.store", "jobs.eval", "jobs.llm.compat")  # the evaluation harness and its compatibility shims


def mlflow_outside_store(imports: dict[str, set[str]]) -> list[str]:
    """Modules outside store/, eval/ and llm/compat.py that import mlflow."""
    return sorted(m for m, names in imports.items()
                  if any(n == "mlflow" or n.startswith("mlflow.") for n in names)
                  and not any(m == r or m.startswith(r + ".") for r in MLFLOW_ROOMS))


def test_mlflow_is_imported_only_behind_store_and_eval():
    imports = {m: imported_names(p) for m, p in {**modules("jobs"), **modules("hydra_plugins")}.items()}
    wrong = mlflow_outside_store(imports)
    assert not wrong, "mlflow imported outside jobs/store, jobs/eval and jobs/llm/compat.py: " + ", ".join(wrong)


def test_the_mlflow_check_sees_a_stage_importing_mlflow():
    assert mlflow_outside_store({"jobs.stages.gate": {"mlflow.tracking"}, "jobs.store.prompts": {"mlflow"},
                                 "jobs.eval.runner": {"mlflow"}, "jobs.gateway.client": {"json"}}) == ["jobs.stages.gate"]


MAX_FUNCTION_LINES = 60


def long_functions(paths: list[Path]) -> list[str]:
    """Functions (methods and nested ones too) longer than MAX_FUNCTION_LINES, with their place."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{path.name}:{node.lineno} {node.name} has {length} lines")
    return out


def test_no_function_in_jobs_is_over_sixty_lines():
    wrong = long_functions(sorted((ROOT / "jobs").rglob("*.py")))
    assert not wrong, "\n".join(wrong)


def test_the_length_check_sees_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n\ndef g():\n    return 1\n")
    short = tmp_path / "short.py"
    short.write_text("def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1))
    assert long_functions([long, short]) == [f"long.py:1 f has {MAX_FUNCTION_LINES + 1} lines"]


def module_state(paths: list[Path]) -> list[str]:
    """``global`` statements: module state that a function rebinds, the way a session leaked before."""
    return sorted(f"{p.name}:{n.lineno} global {', '.join(n.names)}" for p in paths
                  for n in ast.walk(ast.parse(p.read_text(), str(p))) if isinstance(n, ast.Global))


def test_no_module_state_is_rebound_in_jobs():
    wrong = module_state(sorted((ROOT / "jobs").rglob("*.py")))
    assert not wrong, "\n".join(wrong)


def test_the_state_check_sees_a_global(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("current = None\n\n\ndef open_session():\n    global current\n    current = 1\n")
    assert module_state([f]) == ["m.py:5 global current"]
