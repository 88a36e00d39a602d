"""As the template's env.py: the app's models and settings; `sqlalchemy.url` is never read."""

from alembic import context
from app.core.config import settings
from app.models import SQLModel
from sqlalchemy import create_engine, pool

target_metadata = SQLModel.metadata

if context.is_offline_mode():
    context.configure(
        url=settings.sqlalchemy_url,
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(settings.sqlalchemy_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
