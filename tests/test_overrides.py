"""Every override the README and the config comments show works when pasted (issue 26, item 5).

Each ``make <target> ... ARGS="..."`` shown goes through bash (the user's shell) into ``make -n``
(make's own substitution of ARGS into the recipe, printed, not run); the recipe line, and each
``python -m jobs.<module> key=value ...`` shown, goes through bash's word splitting, quote
removal, brace expansion and globbing in the repository's root, as ``make run`` runs it. The
argv that comes out is composed in-process the way its module composes it, so nothing starts and
nothing is written. ``<...>`` placeholders are filled in first (``pipeline_id=<id>``)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from jobs.config.compose import compose
from jobs.config.entry import CONFIG_PATH_ENV, hydra_argv, split_args
from jobs.core.contract import SPECS
from jobs.core.errors import UserError
from jobs.core.paths import CONF_DIR
from jobs.eval import judges
from jobs.pipeline import pipeline_overrides
from jobs.stages import gate

ROOT = CONF_DIR.parent
SOURCES = [ROOT / "README.md", *sorted(CONF_DIR.rglob("*.yaml")), *sorted((ROOT / "examples").glob("*/README.md")),
           *sorted((ROOT / "examples").glob("*/conf/**/*.yaml"))]
ENV = r"(?:[A-Z_]+=[^\s\"']+\s+)*"  # VAR=value prefixes
MAKE = re.compile(ENV + r"make\s+[\w-]+(?:\s+[A-Z_]+=(?:\"(?:[^\"\\]|\\.)*\"|[^\s\"`|#]+))*")  # \" inside "..." kept
PYTHON = re.compile(r"(?:\.venv/bin/)?python -m jobs\.[\w.]+(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|[^\s\"'`|#]+))*")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
SKIPPED = {  # shown with a folder that is the reader's own: tests/test_domains.py composes such a domain
    'make run ARGS="experiment=mydomain"',
    '.venv/bin/python -m jobs.evaluate experiment=mydomain "hydra.searchpath=[file:///path/to/myconf]"',
    # the copy the reader makes first (cp -r examples/visa_desk /srv/visa_desk); the line above it runs in place
    'VISA_DESK_HOME=/srv/visa_desk PYTHONPATH=/srv/visa_desk PROMPTGATE_CONFIG_PATH=/srv/visa_desk/conf make run '
    'ARGS="experiment=visa_desk"',
}
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "STAGE", "FILE", "NAME", "MERGE", "DRIFT", "LAUNCHER")


def snippets(path: Path) -> list[str]:
    """The code a file shows: README code blocks line by line (``\\`` continuations joined) and
    inline code spans; a YAML file's comments."""
    text = path.read_text()
    if path.suffix == ".yaml":
        return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    out, prose, block = [], [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is not None:
                out += "\n".join(block).replace("\\\n", " ").splitlines()
            block = [] if block is None else None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    return out + re.findall(r"`([^`]+)`", " ".join(prose))


def shown_commands() -> list[tuple[str, str]]:
    """(where, command) for every make ... ARGS= and python -m jobs.* command with an override."""
    found = set()
    for path in SOURCES:
        for snippet in snippets(path):
            for m in [*MAKE.finditer(" ".join(snippet.split())), *PYTHON.finditer(" ".join(snippet.split()))]:
                cmd = m.group(0).strip()
                if " ARGS=" in cmd or "python -m" in cmd and "=" in cmd:
                    found.add((str(path.relative_to(ROOT)), cmd))
    return sorted(found)


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def argv_of(cmd: str, tmp_path: Path) -> tuple[list[str], str | None]:
    """The python argv and $PROMPTGATE_CONFIG_PATH the shown command runs with, through bash and make -n."""
    env = {k: v for k, v in os.environ.items() if k not in (*MAKE_VARS, CONFIG_PATH_ENV)}
    cmd = PLACEHOLDER.sub("pg-shown", cmd)
    seen = tmp_path / "config_path"
    recipe = cmd
    if not cmd.startswith((".venv/bin/python", "python")):
        run = bash(f'make() {{ printf %s "${{{CONFIG_PATH_ENV}-}}" > {seen}; command make -s -n "$@"; }}\n{cmd}', env)
        assert run.returncode == 0, f"{cmd}: {run.stderr}"
        recipe = [line for line in run.stdout.splitlines() if " -m jobs." in line and "jobs.core.servers" not in line][-1]
    split = bash(f"printf '%s\\0' {recipe}", env)
    assert split.returncode == 0, f"{recipe}: {split.stderr}"
    return split.stdout.split("\0")[:-1], (seen.read_text() or None) if seen.exists() else None


def composes(argv: list[str]) -> None:
    """Compose as the module does: the driver with its added overrides, a stage through its
    own command-line check, any other module with the key=value arguments it passes on. The
    driver's and the gate's config also pass the gate's check (a hard gate's scorer measured),
    which ``make run`` makes before its first stage."""
    assert argv[1] == "-m" and argv[2].startswith("jobs."), argv
    module, args = argv[2].removeprefix("jobs."), argv[3:]
    if module == "pipeline":
        cfg = compose(pipeline_overrides(args)[0])
        gate.check(cfg)
        judges.check(cfg.judge)  # judge.scorers' entries, as make run checks them before its first stage
    elif module in SPECS:
        hydra_argv(module, args)  # what stage_main does before Hydra: every override composed, each sweep point too
        if module == "gate":
            gate.check(compose(split_args(args)[1]))
    else:
        compose([a for a in args if "=" in a and not a.startswith("-")])


SHOWN = shown_commands()
COMMANDS = [(where, cmd) for where, cmd in SHOWN if cmd not in SKIPPED]  # a placeholder folder of the reader's own


def test_the_docs_show_the_overrides_this_test_reads():
    shown = {cmd for _, cmd in SHOWN}
    assert SKIPPED <= shown  # a placeholder command that is no longer shown is dropped from SKIPPED
    assert {'make run ARGS="judge.scorers=[Safety] \'gate.hard_gates=[{scorer: Safety, min: 1.0}]\'"',
            'make run ARGS="gate=strict judge.scorers=[Safety]"',
            'make run ARGS="\'judge.scorers=[ToolCallCorrectness, ToolCallEfficiency, {name: concise, instructions: '
            '\\"Is the response in {{ outputs }} under 80 words?\\"}]\'"'} <= shown
    assert any(where.startswith("conf/") for where, _ in COMMANDS)
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_each_shown_override_composes_as_pasted(where, cmd, tmp_path, monkeypatch):
    argv, config_path = argv_of(cmd, tmp_path)
    if config_path is None and where.startswith("examples/"):  # shown in an example's own files: its folder
        config_path = "/".join(Path(where).parts[:2] + ("conf",))
    if config_path is None:
        monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    else:
        monkeypatch.setenv(CONFIG_PATH_ENV, config_path)
    try:
        composes(argv)
    except UserError as e:
        pytest.fail(f"{where}: {cmd}\n  argv {argv[3:]}\n  {e}")


def test_the_hard_gate_override_unquoted_is_split_by_the_shell(tmp_path):
    """Why the docs quote it: unquoted, bash hands Hydra four words (with spaces) or two
    brace-expanded ones (without), and the override is refused."""
    spaced, _ = argv_of('make run ARGS="gate.hard_gates=[{scorer: Safety, min: 1.0}]"', tmp_path)
    assert spaced[3:6] == ["gate.hard_gates=[{scorer:", "Safety,", "min:"]
    tight, _ = argv_of('make run ARGS="gate.hard_gates=[{scorer:Safety,min:1.0}]"', tmp_path)
    assert tight[3:5] == ["gate.hard_gates=[scorer:Safety]", "gate.hard_gates=[min:1.0]"]
    with pytest.raises(UserError, match="bad override"):
        composes(spaced)
    quoted, _ = argv_of('make run ARGS="\'gate.hard_gates=[{scorer: Safety, min: 1.0}]\' judge.scorers=[Safety]"',
                        tmp_path)
    assert quoted[3:5] == ["gate.hard_gates=[{scorer: Safety, min: 1.0}]", "judge.scorers=[Safety]"]
    composes(quoted)
