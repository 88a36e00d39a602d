"""The app's tables, as SQLModel declares them (what `alembic check` compares against)."""

import uuid
from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Uuid
from sqlmodel import Field, SQLModel


class User(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(max_length=255, unique=True, index=True)
    is_active: bool = True
    is_superuser: bool = False
    full_name: str | None = Field(default=None, max_length=255)
    hashed_password: str
    created_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Item(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    title: str = Field(max_length=255)
    description: str | None = Field(default=None, max_length=255)
    owner_id: uuid.UUID = Field(
        sa_column=Column(Uuid(), ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
