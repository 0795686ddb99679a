"""Keep the README's configuration table equal to the settings: `python -m sandbox.readme_table`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from config.settings import describe_settings

START = (
    "<!-- settings-table: generated from config/settings.py; "
    "tests/sandbox/test_readme.py checks it -->"
)
END = "<!-- /settings-table -->"


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, desc in describe_settings():
        rows.append(f"| `{env}` | `{default}` | {desc.replace('|', '/')} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise ValueError("README.md has no settings-table markers")
    return pattern.sub(lambda _m: f"{START}\n{table()}\n{END}", readme)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
