"""remediate: runbooks as Prefect 3 flows that detect, diagnose, remediate, verify and notify.

The product's packages, one responsibility each (docs/architecture.md):
- `domain`: models, settings, redaction;
- `store`: the incident store;
- `engine`: incident runs, approvals, the safety envelope, journal, notifications, the catalogue;
- `intake`: alert routing, deduplication, starting runs;
- `receiver`: the HTTP app;
- `app`: the CLI, serve, the warm executor, doctor;
- `lint`: the migration linter for other repositories.

`flows`, `tasks`, `deployments` and `drills` are the checkout's top-level folders of the same names,
linked here so that the installed wheel holds one top-level package and nothing else.
"""
