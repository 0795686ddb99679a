"""The compose stack's containers, found through the Docker SDK by the labels compose sets.

``com.docker.compose.project`` and ``com.docker.compose.service`` name each container's
project and service, so the CLI on the host can see and act on the stack `docker compose
up` started (`sandbox status`, `sandbox chaos`) without parsing `docker compose` output.
"""

from __future__ import annotations

from typing import Any

from config.errors import SandboxError

__all__ = ["ComposeError", "ComposeProject"]


class ComposeError(SandboxError):
    """No Docker engine answers, or the project has no such container."""


class ComposeProject:
    def __init__(self, project: str, client: Any = None) -> None:
        self.project = project
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import docker
            from docker.errors import DockerException

            try:
                client = docker.from_env(timeout=10)
                client.ping()
            except DockerException as exc:
                raise ComposeError(
                    f"no Docker engine answers ({' '.join(str(exc).split())[:160]}); "
                    "is the compose stack running?"
                ) from exc
            self._client = client
        return self._client

    def containers(self, service: str | None = None) -> list[Any]:
        """The project's containers (of ``service``, if given), running or not, by name."""
        labels = [f"com.docker.compose.project={self.project}"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        found = self.client().containers.list(all=True, filters={"label": labels})
        return sorted(found, key=lambda c: c.name)

    def services(self) -> dict[str, list[dict[str, Any]]]:
        """service -> [{name, status, health}] of each of its containers."""
        out: dict[str, list[dict[str, Any]]] = {}
        for c in self.containers():
            health = (c.attrs.get("State", {}).get("Health") or {}).get("Status")
            out.setdefault(c.labels.get("com.docker.compose.service", "?"), []).append(
                {"name": c.name, "status": c.status, "health": health}
            )
        return out
