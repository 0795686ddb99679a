"""Every `sandbox ...` command shown in the README and docs/ parses with the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from sandbox.cli import app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^(?:\$ )?(?:\.venv/bin/)?sandbox\s+(.*)$")


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        fence: str | None = None  # the open fence's language, None outside a fence
        for raw in doc.read_text().splitlines():
            if raw.startswith("```"):
                fence = raw[3:].strip() if fence is None else None
                continue
            in_shell_block = fence is not None and (fence.split() or [""])[0] in ("bash", "sh", "")
            line = raw.split(" #", 1)[0].strip()
            m = COMMAND.match(line) if in_shell_block else None
            if m:
                found.append((f"{doc.name}: {line}", shlex.split(m[1])))
    return found


def test_docs_show_commands() -> None:
    assert len(documented_commands()) >= 8


@pytest.mark.parametrize(
    ("where", "argv"), documented_commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    group = typer.main.get_command(app)
    node = group
    args = list(argv)
    while args and hasattr(node, "commands") and args[0] in node.commands:  # type: ignore[attr-defined]
        node = node.commands[args.pop(0)]  # type: ignore[attr-defined]
    assert node is not group, f"{where}: no such command"
    node.make_context(node.name or "", args)  # raises on unknown options or bad values
