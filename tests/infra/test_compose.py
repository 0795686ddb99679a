"""docker-compose.yml and the local route run the same entry points with the same settings.

These read the file; tests/infra/test_compose_stack.py runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from config.settings import ENV_PREFIX, Settings
from infra.stack import SERVICES
from sandbox.cli import app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
    return data


def sandbox_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run our image (the `sandbox` command)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("streaming-sandbox:")
    }


def sandbox_argv(svc: dict[str, Any]) -> list[str]:
    """The arguments after `sandbox` (the image's entrypoint, or the service's own)."""
    entrypoint = svc.get("entrypoint") or ["sandbox"]
    assert entrypoint[0] == "sandbox"
    return [*entrypoint[1:], *svc["command"]]


def test_the_project_has_a_name(compose: dict[str, Any]) -> None:
    assert compose["name"] == Settings().compose_project


def test_every_service_runs_a_real_sandbox_command(compose: dict[str, Any]) -> None:
    group = typer.main.get_command(app)
    services = sandbox_services(compose)
    assert {"init", "producer", "worker", "sink", "top10"} <= set(services)
    for name, svc in services.items():
        argv = sandbox_argv(svc)
        assert argv[0] in group.commands, f"{name}: `sandbox {argv[0]}` does not exist"  # type: ignore[attr-defined]
        sub = group.commands[argv[0]]  # type: ignore[attr-defined]
        if argv[1:] != ["--help"]:
            sub.make_context(argv[0], list(argv[1:]))  # raises on an unknown option


def test_the_services_of_sandbox_up_are_compose_services(compose: dict[str, Any]) -> None:
    services = sandbox_services(compose)
    for service in SERVICES:
        assert service.name in services, f"`sandbox up` starts {service.name}; compose does not"
        assert sandbox_argv(services[service.name]) == service.command


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, svc in sandbox_services(compose).items():
        for var in svc["environment"]:
            assert var in fields, f"{name}: {var} is not a setting"


def test_every_port_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    published = [p for svc in compose["services"].values() for p in svc.get("ports", [])]
    assert len(published) >= 6  # kafka, storage, catalog, three cluster brokers
    for port in published:
        assert str(port).startswith("127.0.0.1:"), port


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", COMPOSE_TEXT))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.M))
    assert used == documented
    # ...with the default the compose file falls back to.
    example = dict(
        re.findall(r"^([A-Z0-9_]+)=(.*)$", (REPO / ".env.example").read_text(), flags=re.M)
    )
    for var, default in re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", COMPOSE_TEXT):
        assert example[var] == default, var


def test_the_host_view_of_compose_matches_the_published_ports() -> None:
    host = Settings(stack="compose")
    example = dict(
        re.findall(r"^([A-Z0-9_]+)=(.*)$", (REPO / ".env.example").read_text(), flags=re.M)
    )
    assert host.bootstrap_servers == f"127.0.0.1:{example['HOST_KAFKA_PORT']}"
    assert host.catalog_uri == f"http://127.0.0.1:{example['HOST_CATALOG_PORT']}"
    assert host.s3_endpoint == f"http://127.0.0.1:{example['HOST_S3_PORT']}"
    assert (host.s3_access_key, host.s3_secret_key) == (
        example["S3_ACCESS_KEY"],
        example["S3_SECRET_KEY"],
    )


def test_the_image_is_built_from_the_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sandbox"]' in dockerfile
    assert "FROM python:3.11-slim" in dockerfile


def test_the_image_copies_every_package_the_wheel_has() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (REPO / "Dockerfile").read_text(), re.M))
    assert packages == copied


def test_make_images_covers_every_image_the_route_uses(compose: dict[str, Any]) -> None:
    import subprocess

    listed = subprocess.run(
        ["bash", str(REPO / "infra" / "images" / "build-images.sh"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = {svc["image"] for svc in sandbox_services(compose).values()}
    third_party = {svc["image"] for svc in compose["services"].values()} - ours
    bases = set(re.findall(r"^FROM (\S+)", (REPO / "Dockerfile").read_text(), flags=re.M))
    assert sorted(listed) == sorted(third_party | bases)
