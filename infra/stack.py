"""The local stack: what `sandbox up`, `sandbox status` and `sandbox down` act on.

Components are started in dependency order (Kafka, then its topics, then the services that
consume them) and stopped in reverse. Each is a process remembered by pid (infra/processes.py).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from config.settings import Settings
from infra import processes
from infra.catalog_server import CatalogServerConfig, LocalRestCatalog
from infra.catalog_server import answers as catalog_answers
from infra.chaos import LocalChaos
from infra.compose import ComposeProject
from infra.kafka import BrokerError, KafkaConfig, LocalKafka
from kafka_io.admin import ensure_topics, is_ready
from schemas.topics import TopicNames, TopicSpec


def topic_plan(settings: Settings) -> list[TopicSpec]:
    return TopicNames.from_settings(settings).plan()


def topic_names(settings: Settings) -> dict[str, str]:
    return TopicNames.from_settings(settings).by_role()


def local_kafka(settings: Settings) -> LocalKafka:
    return LocalKafka(KafkaConfig.from_settings(settings))


def runs_local_catalog(settings: Settings) -> bool:
    """A REST catalog without a URI is the one `sandbox up` runs here (from Maven jars)."""
    return settings.catalog_type == "rest" and not settings.catalog_uri


def local_catalog(settings: Settings) -> LocalRestCatalog:
    return LocalRestCatalog(
        CatalogServerConfig(
            state_dir=settings.state_dir,
            libs_dir=settings.catalog_libs_dir,
            port=settings.catalog_port,
            heap_mb=settings.catalog_heap_mb,
            warehouse=settings.warehouse,
            s3_endpoint=settings.s3_endpoint,
            s3_access_key=settings.s3_access_key,
            s3_secret_key=settings.s3_secret_key,
            s3_region=settings.s3_region,
        )
    )


def start_catalog(settings: Settings) -> str:
    catalog = local_catalog(settings)
    already = catalog.record()
    rec = catalog.start()
    verb = "already running" if already else "started"
    return f"catalog: {verb} (pid {rec.pid}), Iceberg REST on {catalog.cfg.uri}"


def start_kafka(settings: Settings) -> str:
    kafka = local_kafka(settings)
    already = kafka.record()
    rec = kafka.start(timeout_s=settings.kafka_start_timeout_s)
    verb = "already running" if already else "started"
    return f"kafka: {verb} (pid {rec.pid}) on {settings.bootstrap_servers}"


def local_chaos(settings: Settings) -> LocalChaos:
    """`sandbox chaos` for this state directory's processes, restarted as `up` starts them."""
    restarters: dict[str, Callable[[], str]] = {
        "kafka": functools.partial(start_kafka, settings),
        "catalog": functools.partial(start_catalog, settings),
        **{s.name: functools.partial(start_service, settings, s) for s in SERVICES},
    }
    return LocalChaos(processes.run_dir_of(settings.state_dir), restarters)


def up(settings: Settings, *, services: bool = True) -> list[str]:
    """Start what is not running; returns a line per step for the user. Idempotent."""
    said = []
    if runs_local_catalog(settings):
        said.append(start_catalog(settings))
    if settings.kafka_bootstrap:
        if not is_ready(settings.bootstrap_servers, timeout_s=10):
            raise BrokerError(
                f"SANDBOX_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} does not answer; "
                "is that broker running?"
            )
        said.append(f"kafka: using the broker at {settings.bootstrap_servers}")
    else:
        said.append(start_kafka(settings))
    created = ensure_topics(settings.bootstrap_servers, topic_plan(settings))
    if created:
        said.append(f"topics: created {', '.join(sorted(created))}")
    for service in SERVICES if services else []:
        said.append(start_service(settings, service))
    return said


@dataclass(frozen=True)
class Service:
    """A long-running process of the local stack, started as `sandbox <command>`.

    The same entry point runs in the foreground (`sandbox worker`) and in compose.
    """

    name: str
    command: list[str]  # arguments after `sandbox`, e.g. ["worker"]


# Appended by the stream job and the lake sink, in start order.
SERVICES: list[Service] = [Service("worker", ["worker"]), Service("sink", ["sink"])]


def start_service(settings: Settings, service: Service) -> str:
    rec = processes.running(processes.run_dir_of(settings.state_dir), service.name)
    if rec is not None:
        return f"{service.name}: already running (pid {rec.pid})"
    # The child builds its own Settings from the same environment; pass ours explicitly so
    # that values given to this process (e.g. by a test) reach it even if not exported.
    env = {**os.environ, **settings_env(settings)}
    marker = f"--service-name={service.name}"
    argv = [sys.executable, "-m", "sandbox.cli", *service.command]
    rec = processes.spawn(
        processes.run_dir_of(settings.state_dir),
        service.name,
        [*argv[:3], marker, *argv[3:]],
        log_path=processes.run_dir_of(settings.state_dir) / f"{service.name}.log",
        marker=marker,
        env=env,
    )
    return f"{service.name}: started (pid {rec.pid}), log {rec.log_path}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that rebuild ``settings`` in a child process."""
    out = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            out[f"SANDBOX_{name.upper()}"] = str(value)
    return out


def down(settings: Settings) -> list[str]:
    """Stop every process `up` started, services before Kafka."""
    said = []
    for name in [*(s.name for s in reversed(SERVICES)), "kafka", "catalog"]:
        if processes.stop(processes.run_dir_of(settings.state_dir), name):
            said.append(f"{name}: stopped")
    if not said:
        said.append("nothing was running")
    return said


@dataclass
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


COMPOSE_SERVICES = ("kafka", "storage", "iceberg-rest", "producer", "worker", "sink")


def _compose_components(settings: Settings) -> list[ComponentStatus]:
    """The compose stack's services, one row each, from their containers' states."""
    services = ComposeProject(settings.compose_project).services()
    rows = []
    for name in [*COMPOSE_SERVICES, *sorted(set(services) - set(COMPOSE_SERVICES))]:
        containers = services.get(name, [])
        running = [c for c in containers if c["status"] == "running"]
        rows.append(
            ComponentStatus(
                name,
                running=bool(running),
                healthy=bool(running) and all(c["health"] in (None, "healthy") for c in running),
                detail={"containers": containers},
            )
        )
    return rows


def status(settings: Settings) -> dict[str, Any]:
    """What runs and whether it is healthy; the shape of `sandbox status --json`."""
    if settings.stack == "compose":
        reachable = is_ready(settings.bootstrap_servers, timeout_s=2.0)
        return {
            "stack": "compose",
            "compose_project": settings.compose_project,
            "bootstrap_servers": settings.bootstrap_servers,
            "catalog_uri": settings.catalog_uri,
            "topics": topic_names(settings),
            "topic_details": _topic_details(settings) if reachable else {},
            "components": [c.__dict__ for c in _compose_components(settings)],
        }
    components = []
    rec = processes.running(processes.run_dir_of(settings.state_dir), "kafka")
    reachable = is_ready(settings.bootstrap_servers, timeout_s=2.0)
    topics: dict[str, Any] = {}
    if reachable:
        topics = _topic_details(settings)
    components.append(
        ComponentStatus(
            "kafka",
            running=bool(rec) or (reachable and bool(settings.kafka_bootstrap)),
            healthy=reachable,
            pid=rec.pid if rec else None,
            detail={"bootstrap": settings.bootstrap_servers, "log": rec.log_path if rec else None},
        )
    )
    for service in SERVICES:
        srec = processes.running(processes.run_dir_of(settings.state_dir), service.name)
        components.append(
            ComponentStatus(
                service.name,
                running=srec is not None,
                healthy=srec is not None and reachable,
                pid=srec.pid if srec else None,
                detail={"log": srec.log_path if srec else None},
            )
        )
    crec = processes.running(processes.run_dir_of(settings.state_dir), "catalog")
    if settings.catalog_type == "rest":
        uri = settings.catalog_uri or local_catalog(settings).cfg.uri
        components.append(
            ComponentStatus(
                "catalog",
                running=crec is not None or bool(settings.catalog_uri),
                healthy=catalog_answers(uri),
                pid=crec.pid if crec else None,
                detail={"uri": uri, "log": str(local_catalog(settings).log_file) if crec else None},
            )
        )
    return {
        "stack": "local",
        "bootstrap_servers": settings.bootstrap_servers,
        "state_dir": str(settings.state_dir.resolve()),
        "topics": topic_names(settings),
        "topic_details": topics,
        "components": [c.__dict__ for c in components],
    }


def _topic_details(settings: Settings) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    try:
        md = admin.list_topics(timeout=5)
    except KafkaException:
        return {}
    out = {}
    for role, name in topic_names(settings).items():
        t = md.topics.get(name)
        out[role] = {
            "name": name,
            "exists": t is not None,
            "partitions": len(t.partitions) if t is not None else 0,
        }
    return out
