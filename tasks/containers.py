"""Container tasks over the Docker Engine API (Docker, or podman's compatible service).

Compose services are found by the labels Docker Compose puts on their containers
(`com.docker.compose.project`, `com.docker.compose.service`), so the same code works on a real
Compose host and on the test engine. Each task opens and closes its own client.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from datetime import datetime
from typing import Any

import docker
from docker.errors import DockerException, NotFound
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from remediate.domain.errors import ConfigError
from remediate.tasks.steps import task

__all__ = [
    "AppConfig",
    "AppEmail",
    "ComposeService",
    "ContainerInfo",
    "EngineUnreachable",
    "ServiceContainer",
    "app_config",
    "container_logs",
    "exec_in_service",
    "find_service",
    "list_project",
    "read_app_config",
    "read_file",
    "restart_containers",
]

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


class EngineUnreachable(ConfigError):
    """The container engine does not answer; the message names DOCKER_HOST."""


class ComposeService(BaseModel):
    """A compose project's service on an engine; `resource` names it in locks and the timeline."""

    model_config = ConfigDict(frozen=True)

    docker_host: str
    project: str
    service: str

    @property
    def resource(self) -> str:
        return f"compose://{self.project}/{self.service}"


class ContainerInfo(BaseModel):
    id: str
    name: str
    status: str  # created, running, restarting, exited, paused, dead
    started_at: datetime | None
    image: str
    exit_code: int | None = None
    oom_killed: bool = False
    health: str | None = None


def _client(docker_host: str) -> docker.DockerClient:
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=30)
        client.ping()
    except DockerException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineUnreachable(f"DOCKER_HOST ({docker_host}): {reason}") from None
    return client


def _info(container: docker.models.containers.Container) -> ContainerInfo:
    state = container.attrs.get("State", {})
    started = state.get("StartedAt") or None
    if started and started.startswith("0001-"):
        started = None
    return ContainerInfo(
        id=container.id,
        name=container.name,
        status=container.status,
        started_at=datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00") if started else None,
        image=(container.image.tags or [container.attrs.get("Image", "")])[0]
        if container.image
        else "",
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        health=(state.get("Health") or {}).get("Status") or None,
    )


class ServiceContainer(BaseModel):
    """A container of a compose project, with its service name, the lengths of its environment
    variables (never their values) and the host ports it publishes."""

    service: str
    info: ContainerInfo
    env_lengths: dict[str, int]
    host_ports: list[int]


@task(
    name="list-project",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["containers", "read-only"],
)
def list_project(docker_host: str, *, project: str) -> list[ServiceContainer]:
    """Every container of the compose project, running or not."""
    client = _client(docker_host)
    try:
        found = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
        result = []
        for c in found:
            env = {}
            for item in c.attrs.get("Config", {}).get("Env") or []:
                name, _, value = item.partition("=")
                env[name] = len(value)
            ports = []
            for bindings in (c.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
                for binding in bindings or []:
                    if str(binding.get("HostPort", "")).isdigit():
                        ports.append(int(binding["HostPort"]))
            result.append(
                ServiceContainer(
                    service=(c.labels or {}).get(SERVICE_LABEL, c.name),
                    info=_info(c),
                    env_lengths=env,
                    host_ports=ports,
                )
            )
        return sorted(result, key=lambda s: (s.service, s.info.name))
    finally:
        client.close()


class AppEmail(BaseModel):
    """The backend's own email settings, with the FastAPI template's meaning: empty values are
    ignored (its settings use `env_ignore_empty`), `SMTP_TLS` (default on) is STARTTLS and wins
    over `SMTP_SSL` (implicit TLS), the port defaults to 587."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: SecretStr | None = Field(default=None, repr=False)
    tls: bool | None = None
    ssl: bool | None = None
    sender: str | None = None
    problems: list[str] = Field(default_factory=list)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> AppEmail:
        values = {k: v.strip() for k, v in env.items() if v.strip()}
        problems = []

        def flag(name: str) -> bool | None:
            raw = values.get(name)
            if raw is None:
                return None
            if raw.lower() in TRUE_WORDS | FALSE_WORDS:
                return raw.lower() in TRUE_WORDS
            problems.append(f"{name}={raw!r} is not a boolean (the app will not start)")
            return None

        port = values.get("SMTP_PORT")
        if port is not None and not port.isdigit():
            problems.append(f"SMTP_PORT={port!r} is not a number (the app will not start)")
        password = values.get("SMTP_PASSWORD")
        return cls(
            host=values.get("SMTP_HOST"),
            port=int(port) if port and port.isdigit() else None,
            user=values.get("SMTP_USER"),
            password=SecretStr(password) if password else None,
            tls=flag("SMTP_TLS"),
            ssl=flag("SMTP_SSL"),
            sender=values.get("EMAILS_FROM_EMAIL"),
            problems=problems,
        )


# pydantic's words for booleans, as the template's settings parse them.
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})


class AppConfig(BaseModel):
    """What the auth and email checks need from the app container's environment, never a
    secret's value: the key's length and a fingerprint (sha256, 16 hex digits), the other values
    as they are. Both the template's current setting names (`FRONTEND_HOST`) and the older ones
    apps built on it still carry (`BACKEND_CORS_ORIGINS`) are read."""

    secret_key_length: int
    secret_key_fingerprint: str | None
    access_token_expire_minutes: str | None
    cors_origins: str | None
    frontend_host: str | None = None
    email: AppEmail = Field(default_factory=AppEmail)


@task(
    name="read-app-config",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["containers", "read-only"],
)
def read_app_config(service: ComposeService) -> AppConfig | None:
    """The auth settings of the service's first container (None when it has no container)."""
    client = _client(service.docker_host)
    try:
        found = client.containers.list(
            all=True,
            filters={
                "label": [
                    f"{PROJECT_LABEL}={service.project}",
                    f"{SERVICE_LABEL}={service.service}",
                ]
            },
        )
        if not found:
            return None
        env = dict(item.partition("=")[::2] for item in found[0].attrs["Config"].get("Env") or [])
    finally:
        client.close()
    return app_config(env)


def app_config(env: dict[str, str]) -> AppConfig:
    """The settings the runbooks check, from a backend's environment (template semantics)."""
    values = {k: v for k, v in env.items() if v.strip()}  # empty values are ignored
    key = values.get("SECRET_KEY", "")
    return AppConfig(
        secret_key_length=len(key),
        secret_key_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16] if key else None,
        access_token_expire_minutes=values.get("ACCESS_TOKEN_EXPIRE_MINUTES"),
        cors_origins=values.get("BACKEND_CORS_ORIGINS"),
        frontend_host=values.get("FRONTEND_HOST"),
        email=AppEmail.from_env(values),
    )


@task(
    name="find-service",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["containers", "read-only"],
)
def find_service(service: ComposeService) -> list[ContainerInfo]:
    """Every container of the compose service, running or not."""
    client = _client(service.docker_host)
    try:
        found = client.containers.list(
            all=True,
            filters={
                "label": [
                    f"{PROJECT_LABEL}={service.project}",
                    f"{SERVICE_LABEL}={service.service}",
                ]
            },
        )
        return sorted((_info(c) for c in found), key=lambda c: c.name)
    finally:
        client.close()


@task(
    name="container-logs",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NONE,
    tags=["containers", "read-only"],
)
def container_logs(service: ComposeService, *, container_id: str, tail: int = 30) -> list[str]:
    """The last `tail` log lines of a container of the service (empty if it is gone)."""
    client = _client(service.docker_host)
    try:
        container = client.containers.get(container_id)
        raw = container.logs(tail=tail, stdout=True, stderr=True)
    except NotFound:
        return []
    finally:
        client.close()
    return [_scrub(line) for line in raw.decode("utf-8", "replace").splitlines()][-tail:]


def _scrub(line: str) -> str:
    """Log lines may carry a connection string, a token or a password: mask the values."""
    from remediate.domain.redact import redact

    return redact(line)[:500]


def _running(client: docker.DockerClient, service: ComposeService) -> Any:
    found = client.containers.list(
        filters={
            "label": [f"{PROJECT_LABEL}={service.project}", f"{SERVICE_LABEL}={service.service}"],
            "status": "running",
        }
    )
    if not found:
        raise EngineUnreachable(
            f"no running container for service {service.service} of project {service.project}"
        )
    return found[0]


def exec_in_service(service: ComposeService, argv: list[str]) -> tuple[int, str]:
    """Run `argv` (no shell) in a running container of the service: exit code and output."""
    client = _client(service.docker_host)
    try:
        result = _running(client, service).exec_run(argv, stdout=True, stderr=True)
    finally:
        client.close()
    output = result.output.decode("utf-8", "replace") if result.output else ""
    return int(result.exit_code or 0), output


def read_file(service: ComposeService, path: str) -> str:
    """The text of a file inside a running container of the service."""
    client = _client(service.docker_host)
    try:
        stream, _ = _running(client, service).get_archive(path)
        data = b"".join(stream)
    except NotFound:
        raise EngineUnreachable(f"{path}: not found in service {service.service}") from None
    finally:
        client.close()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member else None
        return handle.read().decode("utf-8") if handle else ""


@task(name="restart-containers", cache_policy=NONE, tags=["containers", "destructive"])
def restart_containers(
    service: ComposeService, *, container_ids: list[str], stop_timeout: int = 10
) -> list[ContainerInfo]:
    """Restart exactly the named containers, each only if it still belongs to the service.

    Returns the restarted containers as they are afterwards (running, with a new start time).
    """
    client = _client(service.docker_host)
    restarted = []
    try:
        for container_id in container_ids:
            try:
                container = client.containers.get(container_id)
            except NotFound:
                continue
            labels = container.labels or {}
            if (labels.get(PROJECT_LABEL), labels.get(SERVICE_LABEL)) != (
                service.project,
                service.service,
            ):
                continue  # not the container the plan named any more
            container.restart(timeout=stop_timeout)
            container.reload()
            restarted.append(_info(container))
    finally:
        client.close()
    return restarted


ERROR_LINE = re.compile(r"error|exception|traceback|fatal|panic", re.IGNORECASE)


def error_lines(lines: list[str], limit: int = 20) -> list[str]:
    """The last `limit` lines of a log that report an error, an exception or a crash."""
    return [line for line in lines if ERROR_LINE.search(line)][-limit:]
