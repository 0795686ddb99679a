"""The notes' runnable blocks, run: each note's ```bash runnable``` blocks, in order, against a
stack of its own, as a learner would type them.

In such a block every line is one shell command (comments after ``#`` allowed), run from the
repository root with the venv's ``sandbox`` on PATH. A line ``#> PATTERN`` under a command
is a claim about what the learner will see: the command's output (stdout and stderr) must
match the regular expression PATTERN (``re.search``, multi-line). A command that fails (a
non-zero exit) fails the note unless the block states ``#> exit N`` for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = "```bash runnable"
EXIT = re.compile(r"^exit (\d+)$")


@dataclass
class Step:
    where: str  # note:line
    command: str
    claims: list[str] = field(default_factory=list)


def parse(note: Path) -> list[Step]:
    """The runnable steps of a note, in order."""
    steps: list[Step] = []
    inside = False
    for lineno, raw in enumerate(note.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            inside = not inside and line == FENCE
            continue
        if not inside or not line:
            continue
        if line.startswith("#>"):
            if not steps:
                raise ValueError(f"{note.name}:{lineno}: a claim before any command")
            steps[-1].claims.append(line[2:].strip())
        elif not line.startswith("#"):
            steps.append(Step(f"{note.name}:{lineno}", line))
    return steps


def runnable_notes() -> list[Path]:
    return [n for n in sorted((REPO / "docs").glob("**/*.md")) if FENCE in n.read_text()]


def check(step: Step, returncode: int, output: str) -> list[str]:
    """What is wrong with a step's outcome (empty: it holds)."""
    expected_exit = 0
    problems = []
    for claim in step.claims:
        if m := EXIT.match(claim):
            expected_exit = int(m[1])
        elif not re.search(claim, output, re.M):
            problems.append(f"{step.where}: `{step.command}` did not show /{claim}/")
    if returncode != expected_exit:
        problems.insert(0, f"{step.where}: `{step.command}` exited {returncode}")
    return problems


@pytest.mark.unit
def test_a_note_parses_into_steps_and_claims(tmp_path: Path) -> None:
    note = tmp_path / "n.md"
    note.write_text(
        "text\n```bash\nsandbox not-run\n```\n"
        f"{FENCE}\nsandbox up   # start\n#> kafka: started\n# a comment\n"
        "sandbox nosuch\n#> exit 2\n```\n"
    )
    steps = parse(note)
    assert [(s.command, s.claims) for s in steps] == [
        ("sandbox up   # start", ["kafka: started"]),
        ("sandbox nosuch", ["exit 2"]),
    ]
    assert check(steps[0], 0, "kafka: started\n") == []
    assert check(steps[0], 0, "kafka: stopped\n") == [
        "n.md:6: `sandbox up   # start` did not show /kafka: started/"
    ]
    assert check(steps[1], 2, "") == []
    assert check(steps[1], 0, "") == ["n.md:9: `sandbox nosuch` exited 0"]


@pytest.mark.unit
def test_every_runnable_note_has_steps_and_claims() -> None:
    notes = runnable_notes()
    assert notes, "no note has a runnable block"
    for note in notes:
        steps = parse(note)
        assert steps and any(s.claims for s in steps), note.name


@pytest.mark.integration
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("note", runnable_notes(), ids=lambda n: n.name)
def test_the_notes_commands_run_and_show_what_they_say(
    note: Path, tmp_path: Path, kafka_libs: Path, port_factory: Callable[[], int]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        SANDBOX_STATE_DIR=str(tmp_path / "state"),
        SANDBOX_KAFKA_LIBS=str(kafka_libs),
        SANDBOX_CATALOG_LIBS=str(kafka_libs.parent / "iceberg-rest-libs"),
        SANDBOX_KAFKA_PORT=str(port_factory()),
        SANDBOX_KAFKA_CONTROLLER_PORT=str(port_factory()),
        SANDBOX_WORKER_WEB_PORT=str(port_factory()),
        SANDBOX_CATALOG_PORT=str(port_factory()),
        COLUMNS="200",  # tables as wide as the claims expect
    )
    problems: list[str] = []
    try:
        for step in parse(note):
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            output = done.stdout + done.stderr
            found = check(step, done.returncode, output)
            if found:
                problems += [*found, f"output:\n{output[-3000:]}"]
                break
    finally:
        subprocess.run(
            ["bash", "-c", "sandbox down"], cwd=REPO, env=env, capture_output=True, check=False
        )
    assert not problems, "\n".join(problems)
