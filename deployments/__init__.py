"""Serving the runbook flows as Prefect deployments (`python -m remediate.deployments.serve`)."""
