"""A real Iceberg REST catalog server, started from the jars Maven Central publishes.

The server is Apache Iceberg's own REST catalog fixture (``RESTCatalogServer``, the program
of the ``apache/iceberg-rest-fixture`` image that compose runs): a JDBC catalog (here a
SQLite file under the state directory) behind the REST API, bound to 127.0.0.1 by a small
launcher (the fixture listens on every interface). ``infra/iceberg-rest/pom.xml``
copies its classpath into ``<state_dir>/iceberg-rest-libs`` once; later starts are offline.
It reads its configuration from ``CATALOG_*`` environment variables (``CATALOG_URI`` ->
``uri``, ``CATALOG_IO__IMPL`` -> ``io-impl``), as the image does.

The warehouse is local files (``file://<state_dir>/rest-warehouse``) unless the settings
name an ``s3://`` warehouse, which the server then reaches through S3FileIO with the same
endpoint and credentials as the Python side.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from config.errors import SandboxError
from infra import processes

__all__ = ["CatalogServerConfig", "CatalogServerError", "LocalRestCatalog", "ensure_jars"]

ICEBERG_VERSION = "1.10.1"
POM = Path(__file__).parent / "iceberg-rest" / "pom.xml"
PROCESS_NAME = "catalog"
# RESTCatalogServer bound to 127.0.0.1 (it listens on every interface otherwise):
# infra/iceberg-rest/src/org/apache/iceberg/rest/LoopbackRESTCatalogServer.java.
MAIN_CLASS = "org.apache.iceberg.rest.LoopbackRESTCatalogServer"
_JARS_READY = ".complete"


class CatalogServerError(SandboxError):
    """The local REST catalog cannot be set up, started or reached."""


@dataclass(frozen=True)
class CatalogServerConfig:
    """What the local REST catalog needs (from Settings, at the entry point)."""

    state_dir: Path
    libs_dir: Path
    port: int = 8181
    heap_mb: int = 256
    warehouse: str | None = None  # None: file://<state_dir>/rest-warehouse
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.state_dir / "iceberg-rest"

    @property
    def warehouse_location(self) -> str:
        return self.warehouse or (self.state_dir.resolve() / "rest-warehouse").as_uri()

    @property
    def run_dir(self) -> Path:
        return processes.run_dir_of(self.state_dir)


def ensure_jars(libs_dir: Path) -> Path:
    """Copy the REST catalog's runtime jars from Maven Central into ``libs_dir``, with the
    loopback launcher compiled beside them (once; later starts are offline)."""
    ready = libs_dir / _JARS_READY
    if ready.exists() and ready.read_text().strip() == _inputs_digest():
        return libs_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CatalogServerError("Maven (mvn) is not on PATH; it fetches the catalog's jars")
    libs_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "package",
            "dependency:copy-dependencies",
            f"-Diceberg.rest.lib.dir={libs_dir.resolve()}",
            f"-Diceberg.rest.build.dir={(libs_dir.parent / 'iceberg-rest-build').resolve()}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise CatalogServerError(f"fetching the REST catalog's jars with Maven failed:\n{tail}")
    ready.write_text(_inputs_digest() + "\n")
    return libs_dir


def _inputs_digest() -> str:
    """What the jars are built from (the pom and the launcher's source): a change redoes them."""
    digest = hashlib.sha256()
    for path in [POM, *sorted((POM.parent / "src").rglob("*.java"))]:
        digest.update(path.read_bytes())
    return f"{ICEBERG_VERSION} {digest.hexdigest()[:16]}"


def answers(uri: str, timeout_s: float = 2.0) -> bool:
    """True if an Iceberg REST catalog answers ``GET <uri>/v1/config``."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/v1/config", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalRestCatalog:
    """Start, check and stop the REST catalog server of one state directory."""

    def __init__(self, cfg: CatalogServerConfig) -> None:
        self.cfg = cfg

    @property
    def log_file(self) -> Path:
        return self.cfg.home / "server.log"

    def record(self) -> processes.ProcessRecord | None:
        return processes.running(self.cfg.run_dir, PROCESS_NAME)

    def environment(self) -> dict[str, str]:
        """The server's configuration, in the image's ``CATALOG_*`` interface."""
        cfg = self.cfg
        db = (cfg.home / "catalog.db").resolve()
        env = {
            "CATALOG_URI": f"jdbc:sqlite:file:{db}",
            "CATALOG_JDBC_SCHEMA__VERSION": "V1",
            "CATALOG_WAREHOUSE": cfg.warehouse_location,
            "CATALOG_REST_HOST": "127.0.0.1",
            "CATALOG_REST_PORT": str(cfg.port),
        }
        if cfg.warehouse_location.startswith("s3://"):
            env |= {
                "CATALOG_IO__IMPL": "org.apache.iceberg.aws.s3.S3FileIO",
                "CATALOG_S3_PATH__STYLE__ACCESS": "true",
                "AWS_REGION": cfg.s3_region,
            }
            if cfg.s3_endpoint:
                env["CATALOG_S3_ENDPOINT"] = cfg.s3_endpoint
            if cfg.s3_access_key and cfg.s3_secret_key:
                env["AWS_ACCESS_KEY_ID"] = cfg.s3_access_key
                env["AWS_SECRET_ACCESS_KEY"] = cfg.s3_secret_key
        return env

    def start(self, timeout_s: float = 60.0) -> processes.ProcessRecord:
        """Start the server in the background (harmless if it runs) and wait until it answers."""
        rec = self.record()
        if rec is not None:
            if answers(self.cfg.uri):
                return rec
            raise CatalogServerError(
                f"a catalog process ({rec.pid}) of {self.cfg.state_dir} runs but does not answer "
                f"on {self.cfg.uri}; see {self.log_file} or run `sandbox down`"
            )
        from kafka_io.ports import port_free

        if not port_free("127.0.0.1", self.cfg.port):
            raise CatalogServerError(
                f"port 127.0.0.1:{self.cfg.port} is in use by another program; stop it or set "
                "SANDBOX_CATALOG_PORT to a free port"
            )
        java = shutil.which("java")
        if java is None:
            raise CatalogServerError("java is not on PATH; the REST catalog needs a JDK 17+")
        libs = ensure_jars(self.cfg.libs_dir)
        self.cfg.home.mkdir(parents=True, exist_ok=True)
        marker = f"-Dsandbox.catalog.home={self.cfg.home.resolve()}"
        # The server turns every CATALOG_* variable into a catalog property: only ours.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "AWS_"))
        } | self.environment()
        rec = processes.spawn(
            self.cfg.run_dir,
            PROCESS_NAME,
            [
                java,
                f"-Xmx{self.cfg.heap_mb}m",
                marker,
                "-cp",
                f"{libs.resolve()}/*",
                MAIN_CLASS,
            ],
            log_path=self.log_file,
            marker=marker,
            env=env,
        )
        ok = processes.wait_until(
            lambda: not processes.alive(rec) or answers(self.cfg.uri),
            timeout_s,
            interval_s=0.25,
        )
        if not (ok and processes.alive(rec)):
            processes.stop(self.cfg.run_dir, PROCESS_NAME)
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise CatalogServerError(
                f"the REST catalog did not answer on {self.cfg.uri} within {timeout_s:.0f}s:\n"
                f"{tail}"
            )
        return rec

    def stop(self, timeout_s: float = 20.0) -> bool:
        return processes.stop(self.cfg.run_dir, PROCESS_NAME, timeout_s)
