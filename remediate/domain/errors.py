"""Errors every layer raises and the CLI and receiver turn into one line."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and is safe to print."""
