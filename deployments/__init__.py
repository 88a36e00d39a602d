"""Serving the runbook flows as Prefect deployments (`python -m deployments.serve`)."""
