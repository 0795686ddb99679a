"""docker-compose.yml and the local route run the same entry points with the same settings.

No Docker engine runs here, so compose itself cannot start; this keeps the file honest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from infra.stack import SERVICES
from sandbox.cli import app
from sandbox.settings import ENV_PREFIX, Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def sandbox_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if name != "kafka"}


def test_every_service_runs_a_real_sandbox_command(compose: dict) -> None:
    group = typer.main.get_command(app)
    services = sandbox_services(compose)
    assert {"init", "producer"} <= set(services)
    for name, svc in services.items():
        command = svc["command"]
        assert command[0] in group.commands, f"{name}: `sandbox {command[0]}` does not exist"  # type: ignore[attr-defined]
        sub = group.commands[command[0]]  # type: ignore[attr-defined]
        sub.make_context(command[0], list(command[1:]))  # raises on an unknown option


def test_the_services_of_sandbox_up_are_compose_services(compose: dict) -> None:
    services = sandbox_services(compose)
    for service in SERVICES:
        assert service.name in services, f"`sandbox up` starts {service.name}; compose does not"
        assert services[service.name]["command"] == service.command


def test_every_variable_is_a_setting(compose: dict) -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, svc in sandbox_services(compose).items():
        for var in svc["environment"]:
            assert var in fields, f"{name}: {var} is not a setting"


def test_the_image_is_built_from_the_package(compose: dict) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sandbox"]' in dockerfile
    for package in ("sandbox", "schemas", "producers", "pipeline", "infra"):
        assert f"COPY {package} ./{package}" in dockerfile
