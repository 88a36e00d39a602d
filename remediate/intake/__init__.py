"""From an alert to a run: routing rules, alert sources, deduplication, starting deployments."""
