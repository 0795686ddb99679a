"""Every file the notes name exists, and every `module.py` name they cite is defined in it:
the notes cannot point at code that moved or was renamed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ROOTS = "config|schemas|kafka_io|producers|pipeline|infra|sandbox|tests|benchmarks|docs"
# `pipeline/lake/top10.py`, `schemas/avro/x.avsc`, or `pipeline/stream/worker.JobWorker`
CITED = re.compile(rf"`((?:{ROOTS})/[\w./-]+?)(?:\.(\w+))?`")
SUFFIXES = {"py", "md", "avsc", "json", "xml", "sql", "yml", "toml", "sh", "java"}


def notes() -> list[Path]:
    return [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("**/*.md"))]


def citations() -> list[tuple[str, Path, str | None]]:
    """(where, file, name defined in it or None) for each path cited in the notes."""
    found = []
    for note in notes():
        for lineno, line in enumerate(note.read_text().splitlines(), 1):
            for m in CITED.finditer(line):
                stem, tail = m[1], m[2]
                where = f"{note.relative_to(REPO)}:{lineno}: {m[0]}"
                if tail in SUFFIXES:
                    found.append((where, REPO / f"{stem}.{tail}", None))
                elif tail is not None:  # module.Name
                    found.append((where, REPO / f"{stem}.py", tail))
                elif not stem.endswith("/"):
                    found.append((where, REPO / stem, None))  # a folder
    return found


def test_the_notes_cite_code() -> None:
    cited = {path.relative_to(REPO).as_posix() for _, path, _ in citations()}
    assert len(cited) >= 30
    assert {"pipeline/lake/top10.py", "pipeline/stream/worker.py", "config/settings.py"} <= cited


def test_a_missing_path_or_name_is_caught(tmp_path: Path) -> None:
    assert not (REPO / "pipeline/lake/nosuch.py").exists()
    with pytest.raises(AssertionError, match="does not exist"):
        test_a_cited_path_exists("x", REPO / "pipeline/lake/nosuch.py", None)
    with pytest.raises(AssertionError, match="defines no NoSuchClass"):
        test_a_cited_path_exists("x", REPO / "pipeline/lake/top10.py", "NoSuchClass")


@pytest.mark.parametrize(
    ("where", "path", "name"), citations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_cited_path_exists(where: str, path: Path, name: str | None) -> None:
    assert path.exists(), f"{where}: {path.relative_to(REPO)} does not exist"
    if name is not None:
        defined = re.search(
            rf"^\s*(?:class|def|async def)\s+{name}\b|^{name}\s*[:=]", path.read_text(), re.M
        )
        assert defined, f"{where}: {path.relative_to(REPO)} defines no {name}"
