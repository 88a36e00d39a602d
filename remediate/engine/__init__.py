"""The engine: an incident run (detect, plan, approval, act, verify), the safety envelope,
the journal, notifications, liveness and the runbook catalogue."""
