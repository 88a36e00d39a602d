"""The integrations' target objects, built from the app's settings here, at the edge: `tasks/`
never reads the settings (an import-linter contract holds that)."""

from __future__ import annotations

from remediate.domain.errors import ConfigError
from remediate.domain.settings import Settings
from remediate.tasks import alembic
from remediate.tasks.alembic import AlembicTarget
from remediate.tasks.containers import ComposeService
from remediate.tasks.postgres import PgTarget
from remediate.tasks.redis import RedisTarget

__all__ = ["alembic_target", "compose_service", "pg_target", "redis_target"]


def pg_target(settings: Settings, *, database: str | None = None) -> PgTarget:
    """TARGET_DATABASE_URL, on `database` when one is named."""
    return PgTarget.of(settings.require_target_database(), database=database)


def redis_target(settings: Settings) -> RedisTarget:
    return RedisTarget.of(settings.target_redis_url)


def compose_service(settings: Settings, service: str) -> ComposeService | None:
    """The named service of COMPOSE_PROJECT_NAME on DOCKER_HOST (None if either is unset)."""
    if not (settings.docker_host and settings.compose_project_name):
        return None
    return ComposeService(
        docker_host=settings.docker_host, project=settings.compose_project_name, service=service
    )


def alembic_target(settings: Settings, *, database: str | None = None) -> AlembicTarget:
    """ALEMBIC_CONFIG against TARGET_DATABASE_URL (on `database`)."""
    if not settings.alembic_config:
        raise ConfigError(alembic.NOT_SET)
    return AlembicTarget.from_config(
        settings.alembic_config,
        database=pg_target(settings, database=database),
        docker_host=settings.docker_host,
        project=settings.compose_project_name,
    )
