"""The alert receiver: authenticate, normalise, deduplicate, route, and start runbook runs."""

from remediate.receiver.app import create_app

__all__ = ["create_app"]
