"""A real Apache Kafka broker, started from the jars Maven Central publishes.

No Docker and no tarball: ``infra/kafka/pom.xml`` depends on ``org.apache.kafka:kafka_2.13``
and Maven copies the runtime classpath into ``<state_dir>/kafka-libs`` (once; later runs are
offline). The broker runs in KRaft combined mode (one process is broker and controller, a
static single voter), bound to loopback, with data and logs under ``<state_dir>/kafka``.
Readiness is asked through the Kafka protocol (admin metadata), not a TCP probe.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import SandboxError
from infra import processes
from kafka_io.admin import is_ready
from kafka_io.ports import free_port, port_free

if TYPE_CHECKING:
    from config.settings import Settings

KAFKA_VERSION = "3.9.1"
POM = Path(__file__).parent / "kafka" / "pom.xml"
PROCESS_NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
_JARS_READY = ".complete"  # written after a successful copy, so a torn copy is redone

LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


class BrokerError(SandboxError):
    """The local broker cannot be set up or started; the message says what to do."""


@dataclass(frozen=True)
class KafkaConfig:
    """What the local broker needs; built from Settings by ``from_settings``."""

    state_dir: Path
    libs_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512

    @classmethod
    def from_settings(cls, s: Settings) -> KafkaConfig:
        return cls(
            state_dir=s.state_dir,
            libs_dir=s.kafka_libs_dir,
            host=s.kafka_host,
            port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            heap_mb=s.kafka_heap_mb,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def run_dir(self) -> Path:
        return processes.run_dir_of(self.state_dir)


def ensure_jars(libs_dir: Path, *, quiet: bool = True) -> Path:
    """Copy Kafka's runtime jars from Maven Central into ``libs_dir`` unless already there."""
    if (libs_dir / _JARS_READY).exists():
        return libs_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH; it fetches the Kafka jars. Install maven.")
    if shutil.which("java") is None:
        raise BrokerError("java is not on PATH; the Kafka broker needs a JDK 17+.")
    libs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dkafka.lib.dir={libs_dir.resolve()}",
    ]
    if quiet:
        cmd.insert(2, "-q")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"fetching the Kafka jars with Maven failed:\n{tail}")
    if not list(libs_dir.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(f"Maven finished but {libs_dir} has no kafka_2.13-{KAFKA_VERSION}.jar")
    (libs_dir / _JARS_READY).write_text(KAFKA_VERSION + "\n")
    return libs_dir


def server_properties(cfg: KafkaConfig) -> str:
    data_dir = (cfg.home / "data").resolve()
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One broker: internal topics cannot be replicated.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        # Consumers in tests and demos join immediately instead of waiting 3 s for peers.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",  # topics are created explicitly, with their configs
        "log.retention.hours": "168",
        "log.segment.bytes": str(128 * 1024 * 1024),
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid()``, one that starts with "-" is drawn again: the
    command-line tools would read it as an option (1 draw in 64 does)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """Set up, start, check and stop the local broker of one state directory."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg

    @property
    def log_file(self) -> Path:
        return self.cfg.home / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.cfg.home / "logs" / "stdout.log"

    def record(self) -> processes.ProcessRecord | None:
        return processes.running(self.cfg.run_dir, PROCESS_NAME)

    def configure(self) -> Path:
        """Write server.properties and log4j.properties; format storage on first use."""
        home = self.cfg.home
        (home / "logs").mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text(server_properties(self.cfg))
        (home / "log4j.properties").write_text(LOG4J.format(log_file=self.log_file.resolve()))
        data = home / "data"
        if not (data / "meta.properties").exists():
            cluster_id = new_cluster_id()
            result = subprocess.run(
                [
                    *self._java(),
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                    "--ignore-formatted",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka storage in {data} failed: "
                    f"{(result.stdout + result.stderr).strip()[-800:]}"
                )
        return props

    def start(self, timeout_s: float = 60.0) -> processes.ProcessRecord:
        """Start the broker in the background (harmless if it already runs) and wait for it."""
        rec = self.record()
        if rec is not None:
            if is_ready(self.cfg.bootstrap):
                return rec
            raise BrokerError(
                f"a broker process ({rec.pid}) of {self.cfg.state_dir} runs but does not answer "
                f"on {self.cfg.bootstrap}; see {self.log_file} or run `sandbox down`"
            )
        for port in (self.cfg.port, self.cfg.controller_port):
            if not port_free(self.cfg.host, port):
                raise BrokerError(
                    f"port {self.cfg.host}:{port} is in use by another program; stop it or set "
                    "SANDBOX_KAFKA_PORT / SANDBOX_KAFKA_CONTROLLER_PORT to free ports"
                )
        ensure_jars(self.cfg.libs_dir)
        props = self.configure()
        argv = [
            *self._java(
                f"-Xmx{self.cfg.heap_mb}m",
                f"-Xms{min(self.cfg.heap_mb, 256)}m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                f"-Dlog4j.configuration=file:{(self.cfg.home / 'log4j.properties').resolve()}",
                f"-Dsandbox.home={self.cfg.home.resolve()}",  # the pid-reuse marker
            ),
            MAIN_CLASS,
            str(props.resolve()),
        ]
        rec = processes.spawn(
            self.cfg.run_dir,
            PROCESS_NAME,
            argv,
            log_path=self.stdout_file,
            marker=f"-Dsandbox.home={self.cfg.home.resolve()}",
        )
        ok = processes.wait_until(
            lambda: not processes.alive(rec) or is_ready(self.cfg.bootstrap),
            timeout_s,
            interval_s=0.25,
        )
        if not processes.alive(rec):
            processes.stop(self.cfg.run_dir, PROCESS_NAME)
            raise BrokerError(f"the broker exited during start-up:\n{self._log_tail()}")
        if not ok:
            processes.stop(self.cfg.run_dir, PROCESS_NAME)
            raise BrokerError(
                f"the broker did not answer on {self.cfg.bootstrap} within {timeout_s:.0f}s:\n"
                f"{self._log_tail()}"
            )
        return rec

    def stop(self, timeout_s: float = 30.0) -> bool:
        return processes.stop(self.cfg.run_dir, PROCESS_NAME, timeout_s)

    def _java(self, *jvm_opts: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not on PATH; the Kafka broker needs a JDK 17+.")
        return [java, *jvm_opts, "-cp", f"{self.cfg.libs_dir.resolve()}/*"]

    def _log_tail(self, lines: int = 20) -> str:
        out = []
        for f in (self.stdout_file, self.log_file):
            if f.exists():
                out += f.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out) or "(no log output)"


@contextmanager
def temporary_broker(
    libs_dir: Path, *, state_dir: Path | None = None, heap_mb: int = 512, timeout_s: float = 90
) -> Iterator[KafkaConfig]:
    """A broker of its own on free ports, stopped on exit: for tests and benchmarks."""
    cfg = KafkaConfig(
        state_dir=state_dir or Path(tempfile.mkdtemp(prefix="sandbox-kafka-")),
        libs_dir=libs_dir,
        port=free_port(),
        controller_port=free_port(),
        heap_mb=heap_mb,
    )
    broker = LocalKafka(cfg)
    broker.start(timeout_s=timeout_s)
    try:
        yield cfg
    finally:
        broker.stop()
