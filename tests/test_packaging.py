"""A normal (non-editable) install holds the whole program: what the image installs.

The local route installs the project editable, which reads every file from the checkout and
so hides a package or data file the wheel leaves out (the compose sink once died on
``No module named 'pipeline.lake'``). Here the wheel is built as `pip install .` builds it,
installed into a fresh virtualenv without the checkout on its path, and then every module is
imported and every command's ``--help`` runs from that install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sandbox", "schemas", "producers", "pipeline", "infra")
# What the programs read at run time besides modules: schemas, the title catalog, the poms.
DATA_SUFFIXES = (".py", ".avsc", ".json", ".xml", ".java")


def tracked_files() -> set[str]:
    """The package files of the checkout (what a clone has once this is committed), relative
    to the repo root."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # infra/images/ and infra/engine/ are build assets of `make images`, used from the
    # checkout (an image is built from a clone, not from an installed package).
    return {
        f
        for f in out
        if f.endswith(DATA_SUFFIXES) and not f.startswith(("infra/images/", "infra/engine/"))
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the project's wheel (no deps) and, through a .pth line, the
    dependencies of the development venv (its own .pth files, the editable finder among
    them, are not processed: the checkout is not importable from the fresh venv)."""
    root = tmp_path_factory.mktemp("packaging")
    # From a copy of the files git knows (as a fresh clone has them): an in-tree build
    # would reuse a stale build/ folder and hide a missing package.
    source = root / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = REPO / name.decode()
        if src.is_file():
            (source / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / name.decode())
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("streaming_sandbox-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return env_dir


def run_in(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run without the checkout: another working directory, no PYTHONPATH."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={"PATH": "/usr/bin"})


def test_every_package_file_is_installed(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    site = run_in(
        str(python),
        "-c",
        "import sandbox, pathlib; print(pathlib.Path(sandbox.__file__).parents[1])",
        cwd=tmp_path,
    )
    assert site.returncode == 0, site.stderr
    site_dir = Path(site.stdout.strip())
    assert installed in site_dir.parents, f"imported from {site_dir}, not the fresh venv"
    missing = sorted(f for f in tracked_files() if not (site_dir / f).is_file())
    assert missing == [], f"not in the wheel: {missing}"


def test_every_module_imports_and_reads_its_data(installed: Path, tmp_path: Path) -> None:
    script = f"""
import importlib, json, pkgutil, sys
names = []
for top in {PACKAGES!r}:
    pkg = importlib.import_module(top)
    names.append(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        importlib.import_module(info.name)
        names.append(info.name)
# data files, read the way the programs read them
from schemas.topics import events_codec
events_codec("ms")
from schemas.catalog import load_catalog
catalog = load_catalog()
outside = [n for n in names if "{REPO}" in (getattr(sys.modules[n], "__file__", "") or "")]
print(json.dumps({{"modules": names, "titles": len(catalog.titles), "outside": outside}}))
"""
    result = run_in(str(installed / "bin" / "python"), "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = {
        f.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for f in tracked_files()
        if f.endswith(".py")
    }
    assert set(report["modules"]) == expected
    assert report["outside"] == []
    assert report["titles"] > 0


def command_paths(installed: Path, cwd: Path) -> list[list[str]]:
    """Every command of the installed `sandbox`, groups walked (e.g. ["inject", "late"])."""
    script = """
import json, typer
from sandbox.cli import app
def walk(cmd, path):
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [path]
    return [p for name, sub in sorted(subs.items()) for p in walk(sub, [*path, name])]
print(json.dumps(walk(typer.main.get_command(app), [])))
"""
    result = run_in(str(installed / "bin" / "python"), "-c", script, cwd=cwd)
    assert result.returncode == 0, result.stderr
    paths: list[list[str]] = json.loads(result.stdout)
    return paths


def test_every_command_of_the_installed_entry_point_has_help(
    installed: Path, tmp_path: Path
) -> None:
    paths = command_paths(installed, tmp_path)
    assert ["worker"] in paths and ["inject", "late"] in paths and ["sink"] in paths
    sandbox = str(installed / "bin" / "sandbox")
    for path in [[], *paths]:
        result = run_in(sandbox, *path, "--help", cwd=tmp_path)
        assert result.returncode == 0, f"sandbox {' '.join(path)} --help: {result.stderr}"
        assert "Usage: sandbox" in result.stdout
