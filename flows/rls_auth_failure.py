"""Seed 002 §1, "RLS/Auth Failure" (P1): row-level security broken, users locked out.

Detect: policies of the protected tables (of the schemas in RLS_SCHEMAS, default every non-system
schema) differ from the last known-good snapshot; a function the policies call was replaced; an
RLS-enabled table that had policies has none; RLS switched off on a protected table; an
in-database access probe as `authenticated` with a test user's claims fails. A healthy run records
the snapshot.
Diagnose: the diff per table and policy; commits of the last hours touching auth or migrations
in `APP_REPO`. Remediate (approval): one transaction that drops the broken policies, recreates the
known-good ones and re-enables RLS, also written as a migration file in `MIGRATIONS_DIR` when set.
The flow only recreates what the snapshot holds; functions of Supabase's services (`auth.uid()`…)
are escalated, never replaced; a plan dropping a RESTRICTIVE policy, putting back a policy that
may be wider than the live one, or replacing a function is for a person only (Plan.manual_only).
Verify: policies equal the snapshot and the probe passes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect import Flow, get_run_logger

from remediate.domain.models import ActionResult, Diagnosis, Finding, Outcome, Plan, PlannedAction
from remediate.domain.sqltext import split_top_level, unwrap
from remediate.engine import targets
from remediate.engine.runbook import Detection, Escalate, Runbook, RunbookParameters
from remediate.store.database import Store
from remediate.tasks import git, http_probe, rls, sentry
from remediate.tasks.postgres import PgTarget
from remediate.tasks.rls import Function, Policy, RlsState

RUNBOOK = "rls-auth-failure"
SNAPSHOT = "rls-policies"
ROLLBACK = "rollback-rls-policies"
REVERT = "revert-auth-commit"
DEFAULT_TABLES = ["public.users", "public.classes", "public.students", "public.teachers"]
# Schemas whose functions belong to a Supabase service, not to the app: a changed one is
# escalated, naming it, and never replaced (the service's own migrations define it).
MANAGED_FUNCTION_SCHEMAS = {
    "auth": "Supabase Auth (GoTrue)",
    "storage": "Supabase Storage",
    "extensions": "an extension",
    "graphql": "pg_graphql",
    "realtime": "Supabase Realtime",
    "vault": "Supabase Vault",
    "pgsodium": "pgsodium",
}
AUTH_PATHS = ["src/lib/auth*", "src/app/actions/auth*", "supabase/migrations/"]
PREVENTION = (
    "test RLS policies in CI (a probe per role); review migrations touching policies; keep the"
    " known-good snapshot current with the scheduled health sweep"
)


# Pure decisions.


@dataclass(frozen=True)
class PolicyDiff:
    missing: list[Policy]  # in the snapshot, gone now
    changed: list[tuple[Policy, Policy]]  # (known-good, now)
    extra: list[Policy]  # not in the snapshot
    rls_off: list[str]
    no_policy: list[str]  # RLS on, no policy at all: every query denied
    functions: list[tuple[Function, Function | None]] = field(default_factory=list)
    # (known-good, now or None when gone) of the functions the snapshot's policies call

    @property
    def app_functions(self) -> list[Function]:
        """Changed functions of the app's own, which the rollback puts back."""
        return [old for old, _ in self.functions if old.schema_name not in MANAGED_FUNCTION_SCHEMAS]

    @property
    def managed_functions(self) -> list[Function]:
        """Changed functions a Supabase service owns: named in an escalation, never replaced."""
        return [old for old, _ in self.functions if old.schema_name in MANAGED_FUNCTION_SCHEMAS]

    @property
    def opened(self) -> list[Policy]:
        """Policies now in place that the snapshot does not hold and that grant `anon` or
        `public` (everyone, signed in or not): a possible data exposure, not a lock-out."""
        everyone = {"anon", "public"}
        opened = [p for p in self.extra if p.permissive == "PERMISSIVE" and everyone & set(p.roles)]
        for old, new in self.changed:
            granted = everyone & (set(new.roles) - set(old.roles))
            unconditional = (new.qual or "").strip() == "true" and everyone & set(new.roles)
            if new.permissive == "PERMISSIVE" and (granted or unconditional):
                opened.append(new)
        return opened

    @property
    def empty(self) -> bool:
        return not (
            self.missing
            or self.changed
            or self.extra
            or self.rls_off
            or self.no_policy
            or self.functions
        )

    def lines(self) -> list[str]:
        out = [f"{p.qualified_table}: policy {p.name} is missing" for p in self.missing]
        out += [
            f"{old.qualified_table}: policy {old.name} changed ({_show(new)} instead of"
            f" {_show(old)})"
            for old, new in self.changed
        ]
        out += [
            f"{p.qualified_table}: policy {p.name} is not in the snapshot ({_show(p)})"
            for p in self.extra
        ]
        out += [
            f"function {old.signature} called by the policies " + function_change(old, new)
            for old, new in self.functions
        ]
        out += [f"{t}: row-level security is off" for t in self.rls_off]
        out += [f"{t}: RLS on with no policy (every query is denied)" for t in self.no_policy]
        return out


def function_change(good: Function, now: Function | None) -> str:
    """How `now` differs from the snapshot's `good` ("" when it does not): gone, replaced, owned
    by another role (SECURITY DEFINER runs as its owner), or executable by other roles."""
    if now is None:
        return "is gone"
    changes = []
    if now.definition != good.definition:
        changes.append("was replaced (its definition differs)")
    if good.owner is not None and now.owner != good.owner:
        changes.append(f"is owned by {now.owner} instead of {good.owner}")
    if good.executors is not None and now.executors != good.executors:
        changes.append(
            "may be executed by "
            + (", ".join(r or "PUBLIC" for r in now.executors or []) or "nobody")
            + " instead of "
            + (", ".join(r or "PUBLIC" for r in good.executors) or "nobody")
        )
    return "; ".join(changes)


def _show(p: Policy) -> str:
    return (
        ("RESTRICTIVE " if p.permissive != "PERMISSIVE" else "")
        + f"{p.cmd} TO {', '.join(p.roles)} USING ({p.qual})"
        + (f" WITH CHECK ({p.with_check})" if p.with_check else "")
    )


def protected_tables(
    snapshot: RlsState | None, tables: list[str] | None, schemas: list[str] | None = None
) -> list[str]:
    """`schema.table` names (a bare name is `public`'s): `tables`, else those with RLS on in the
    snapshot (of `schemas` when set: RLS_SCHEMAS narrowed since the snapshot), else the seed's."""
    if tables:
        return sorted(rls.qualified(*rls.split_table(t)) for t in tables)
    if snapshot is not None:
        return sorted(
            t
            for t, on in snapshot.rls.items()
            if on and (not schemas or rls.split_table(t)[0] in schemas)
        )
    return sorted(DEFAULT_TABLES)


def policy_diff(snapshot: RlsState, now: RlsState, tables: list[str]) -> PolicyDiff:
    good = {k: p for k, p in snapshot.by_key().items() if p.qualified_table in tables}
    current = {k: p for k, p in now.by_key().items() if p.qualified_table in tables}
    live = now.by_signature()
    return PolicyDiff(
        missing=[p for k, p in sorted(good.items()) if k not in current],
        changed=[
            (p, current[k]) for k, p in sorted(good.items()) if k in current and current[k] != p
        ],
        extra=[p for k, p in sorted(current.items()) if k not in good],
        rls_off=[t for t in tables if snapshot.rls.get(t) and not now.rls.get(t, False)],
        # RLS on with no policy is Supabase's lock-down of a service-role-only table, a valid
        # state; only a table that had policies in the snapshot and has none now is broken.
        no_policy=[
            t
            for t in no_policy_tables(now, tables)
            if any(p.qualified_table == t for p in snapshot.policies)
        ],
        functions=[
            (f, live.get(f.signature))
            for f in snapshot.functions
            if function_change(f, live.get(f.signature))
        ],
    )


def no_policy_tables(now: RlsState, tables: list[str]) -> list[str]:
    with_policy = {p.qualified_table for p in now.policies}
    return [t for t in tables if now.rls.get(t) and t not in with_policy]


def detect(
    now: RlsState,
    snapshot: RlsState | None,
    tables: list[str],
    probe: rls.ProbeAccess | None,
    *,
    probes: Sequence[Finding] = (),
) -> tuple[list[Finding], PolicyDiff | None]:
    """Findings on the policies, the RLS flags and the probes (`probes`: login, Sentry…)."""
    findings = []
    diff = policy_diff(snapshot, now, tables) if snapshot is not None else None
    if diff is not None:
        findings.append(
            Finding(
                check="policies-match-snapshot",
                ok=not (diff.missing or diff.changed or diff.extra),
                detail="; ".join(diff.lines()[:6])
                if not diff.empty
                else "policies equal the snapshot",
            )
        )
        findings.append(
            Finding(
                check="rls-enabled",
                ok=not diff.rls_off,
                detail=f"RLS off on {', '.join(diff.rls_off)}"
                if diff.rls_off
                else "RLS on for every protected table",
            )
        )
        findings.append(
            Finding(
                check="functions-match-snapshot",
                ok=not diff.functions,
                detail="; ".join(
                    f"{old.signature} " + function_change(old, new) for old, new in diff.functions
                )
                if diff.functions
                else f"the {len(snapshot.functions if snapshot else [])} function(s) the"
                " policies call equal the snapshot",
            )
        )
    else:
        findings.append(
            Finding(
                check="policies-match-snapshot",
                ok=True,
                detail="no known-good snapshot yet: nothing to compare",
            )
        )
    # A table locked down on purpose (RLS on, no policy) is valid: only one that had policies in
    # the snapshot is reported.
    empty = diff.no_policy if diff is not None else []
    findings.append(
        Finding(
            check="tables-without-policy",
            ok=not empty,
            detail=f"RLS on with no policy: {', '.join(empty)}"
            if empty
            else "every RLS table has a policy",
        )
    )
    if probe is not None:
        findings.append(Finding(check="access-probe", ok=probe.ok, detail=probe.detail))
    return findings + list(probes), diff


def plan_revert(commit: git.Commit, *, resource: str, repo: str) -> Plan:
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"revert {commit.sha[:10]} ({commit.subject}) in {repo}",
        actions=[
            PlannedAction(
                name=REVERT,
                destructive=True,
                resource=f"git://{repo}",
                description="The policies match the snapshot but access fails, and this commit"
                " touched auth code or migrations in the last hours: revert it (a new commit;"
                " nothing is pushed: deploying it stays the team's step, seed 002).",
                targets=[f"commit {commit.sha[:10]}: {commit.subject}"],
                details=[
                    f"{commit.sha} by {commit.author} at {commit.date}:"
                    f" {', '.join(commit.files[:5])}"
                ],
                statements=[f"git -C {repo} revert --no-edit {commit.sha}"],
                params={"sha": commit.sha},
            )
        ],
    )


def conjuncts(expression: str) -> set[str]:
    """The top-level `AND` terms of a condition as PostgreSQL prints it, outer parentheses
    removed, the text otherwise exact (literals and quoted names keep their case):
    `(a AND (b AND c))` → {a, b, c}."""
    text = unwrap(expression)
    terms = split_top_level(text, " AND ")
    if len(terms) <= 1:
        return {text}
    return set().union(*(conjuncts(t) for t in terms))


def _within(condition: str | None, live: str | None) -> bool:
    """True when `condition` provably admits no row `live` does not. A PERMISSIVE policy without
    the expression admits nothing for it (PostgreSQL's rowsecurity.c ORs only the policies'
    present expressions), so a missing `condition` is within anything and a missing `live`
    holds only a missing one. Otherwise: `live` is `true`, or every term of `live` is one of
    `condition`'s (`condition` is `live AND more`; the same condition included)."""
    if condition is None:
        return True
    if live is None:
        return False
    theirs = conjuncts(live)
    return theirs == {"true"} or theirs <= conjuncts(condition)


def wider_reasons(good: Policy, live: Policy) -> list[str]:
    """Why the snapshot's `good` policy may grant more than the `live` one it replaces. Empty only
    when it is provably not wider: a RESTRICTIVE one (it only takes rights away), or a permissive
    one whose roles, commands and conditions are each within the live policy's."""
    if good.permissive != "PERMISSIVE":
        return []
    reasons = []
    if live.permissive != "PERMISSIVE":
        reasons.append("a PERMISSIVE policy replaces a RESTRICTIVE one")
    if "public" not in live.roles and ("public" in good.roles or set(good.roles) - set(live.roles)):
        reasons.append(f"roles {', '.join(good.roles)} instead of {', '.join(live.roles)}")
    if live.cmd != "ALL" and good.cmd != live.cmd:
        reasons.append(f"FOR {good.cmd} instead of FOR {live.cmd}")
    # PostgreSQL printed both expressions: the snapshot's is within the live one when it is the
    # same condition or the live one `AND` more terms; anything else is not provably narrower.
    for what, old, new in [
        ("USING", good.qual, live.qual),
        ("WITH CHECK", good.with_check or good.qual, live.with_check or live.qual),
    ]:
        if not _within(old, new):
            reasons.append(f"{what} ({old}) instead of ({new})")
    return reasons


def manual_reasons(diff: PolicyDiff) -> list[str]:
    """What only a person may approve in the rollback of `diff` (Plan.manual_only)."""
    reasons = [
        f"drops the RESTRICTIVE policy {p.label} ({_show(p)}): access it denies would be allowed"
        for p in [new for _, new in diff.changed] + diff.extra
        if p.permissive != "PERMISSIVE"
    ]
    for good, live in diff.changed:
        why = wider_reasons(good, live)
        if why:
            reasons.append(
                f"replaces the live policy {live.label} with the snapshot's, which may be wider"
                f" than it: {'; '.join(why)}"
            )
    reasons += [
        f"replaces the function {f.signature} with the snapshot's definition: what the policies"
        " calling it allow may widen"
        for f in diff.app_functions
    ]
    return reasons


def plan_rollback(
    diff: PolicyDiff, snapshot: RlsState, *, resource: str, migrations_dir: str | None
) -> Plan:
    drop = [new for _, new in diff.changed] + diff.extra
    create = diff.missing + [old for old, _ in diff.changed]
    functions = diff.app_functions
    statements = rls.rollback_statements(
        drop=drop, create=create, enable_rls=diff.rls_off, functions=functions
    )
    rendered = [s.as_string(None) + ";" for s in statements]
    where = f" and written as a migration file in {migrations_dir}" if migrations_dir else ""
    manual = manual_reasons(diff)
    action = PlannedAction(
        name=ROLLBACK,
        destructive=True,
        resource=resource,
        description="Restore the known-good policies"
        + (" and the functions they call" if functions else "")
        + " in one transaction"
        + where
        + ". Only policies and function definitions of the snapshot are created.",
        targets=[f"replace function {f.signature}" for f in functions]
        + [f"drop policy {p.label}" for p in drop]
        + [f"create policy {p.label}" for p in create]
        + [f"enable RLS on {t}" for t in diff.rls_off],
        details=diff.lines()
        + [f"only a person may approve: {reason}" for reason in manual]
        + [f"snapshot definition of {f.signature}:\n{f.definition}" for f in functions],
        statements=rendered,
        params={
            "drop": [p.model_dump() for p in drop],
            "create": [p.model_dump() for p in create],
            "enable_rls": diff.rls_off,
            "functions": [f.model_dump() for f in functions],
        },
    )
    touched = sorted({p.qualified_table for p in drop + create} | set(diff.rls_off))
    what = [f"the RLS policies of {', '.join(touched)}"] if touched else []
    what += [f"the functions {', '.join(f.signature for f in functions)}"] if functions else []
    return Plan(
        runbook=RUNBOOK,
        resource=resource,
        summary=f"roll back {' and '.join(what)} to the snapshot",
        actions=[action],
        manual_only=manual,
    )


def widens(plan: Plan, snapshot: RlsState) -> list[str]:
    """Policies and functions the plan would create that the snapshot does not hold exactly, and
    functions of a Supabase service it would replace (must be none)."""
    good = snapshot.by_key()
    created = [Policy(**p) for a in plan.actions for p in a.params.get("create", [])]
    functions = [Function(**f) for a in plan.actions for f in a.params.get("functions", [])]
    known = snapshot.by_signature()
    return [p.label for p in created if good.get(p.key) != p] + [
        f.signature
        for f in functions
        if known.get(f.signature) != f or f.schema_name in MANAGED_FUNCTION_SCHEMAS
    ]


def rollback_file(migrations_dir: str, statements: list[str], *, now: float) -> Path:
    """The rollback as a migration the Supabase CLI accepts: `<YYYYMMDDHHMMSS>_rollback_rls.sql`
    (UTC; it sorts after every earlier migration, so `supabase db push` takes it), idempotent
    (each policy dropped IF EXISTS before it is created), and without BEGIN/COMMIT: the CLI runs
    each migration in a transaction of its own."""
    version = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    path = Path(migrations_dir) / f"{version}_rollback_rls.sql"
    header = [
        "-- Rollback of RLS policies to the last known-good snapshot.",
        "-- Written by remediate (rls-auth-failure), which already applied it to the live",
        "-- database in one transaction. `supabase db push` would run it again (harmless: it is",
        f"-- idempotent); `supabase migration repair --status applied {version}` records it",
        "-- as applied without running it.",
        "",
    ]
    path.write_text("\n".join([*header, *statements, ""]), encoding="utf-8")
    return path


# The runbook.


class RlsAuthFailure(Runbook):
    """Seed 002 §1: RLS broken → roll back to the known-good policies (approval) → probe."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "users may be unable to log in or see their data"
    prevention = PREVENTION
    # The detector connects to the target first, which is the module's preflight's check: the
    # health sweep skips it (one connection less per database).
    sweep_preflight = False

    class Parameters(RunbookParameters):
        tables: list[str] | None = None
        probe_user_id: str | None = None
        probe_table: str = "users"
        since_hours: float = 2
        login_path: str | None = None
        auth_error_limit_per_minute: float = 10
        database: str | None = None

    params: Parameters
    target: PgTarget
    # What detection saw, which the plan, its re-check and the verification are held to.
    snapshot: RlsState | None
    now: RlsState
    protected: list[str]
    diff: PolicyDiff | None
    commits: list[git.Commit]

    def preflight(self) -> None:
        """Before a CLI run: the target database answers (the run's detector connects first)."""
        targets.pg_target(self.settings, database=self.params.database).connect().close()

    def access_probe(self) -> rls.ProbeAccess | None:
        if not self.params.probe_user_id:
            return None
        return rls.probe_access(
            self.target, table=self.params.probe_table, user_id=self.params.probe_user_id
        )

    def login_probe(self) -> list[Finding]:
        settings = self.settings
        if not (settings.app_url and settings.login_probe_email and settings.login_probe_password):
            return []
        login = http_probe.probe_login(
            settings.app_url,
            path=self.params.login_path or settings.app_login_path,
            email=settings.login_probe_email,
            password=settings.login_probe_password,
            form=settings.app_login_form,
        )
        if login.misconfigured:  # the probe does not fit the app: reported, not evidence
            problem = http_probe.misconfiguration(login, setting="APP_LOGIN_PATH, APP_LOGIN_FORM")
            get_run_logger().warning(problem)
            return [Finding(check="login-probe-configuration", ok=True, detail=problem)]
        return [Finding(check="login-probe", ok=login.ok, detail=login.detail)]

    def sentry_rate(self) -> list[Finding]:
        settings = self.settings
        if not (
            settings.sentry_api_url
            and settings.sentry_auth_token
            and settings.sentry_org
            and settings.sentry_project
        ):
            return []
        rate = sentry.error_rate(
            settings.sentry_api_url,
            token=settings.sentry_auth_token,
            org=settings.sentry_org,
            project=settings.sentry_project,
            query="auth_error",
        )
        limit = self.params.auth_error_limit_per_minute
        high = rate.per_minute is not None and rate.per_minute > limit
        return [
            Finding(
                check="sentry-auth-errors",
                ok=not high,
                detail=f"{rate.detail} (limit {limit:g}/min)",
            )
        ]

    def read_state(self) -> RlsState:
        known_functions = [f.signature for f in self.snapshot.functions] if self.snapshot else []
        return rls.read_rls_state(
            self.target, schemas=self.settings.rls_schemas, functions=known_functions
        )

    def detect(self) -> Detection:
        """Policies against the snapshot, RLS flags, the functions the policies call, the access,
        login and Sentry probes. A healthy run records the snapshot."""
        settings = self.settings
        self.target = targets.pg_target(settings, database=self.params.database)
        store = Store.open(settings.remediation_database_url)
        saved = store.latest_snapshot(SNAPSHOT, self.target.resource)
        self.snapshot = RlsState(**saved) if saved else None
        self.now = self.read_state()
        self.protected = protected_tables(self.snapshot, self.params.tables, settings.rls_schemas)
        findings, self.diff = detect(
            self.now,
            self.snapshot,
            self.protected,
            self.access_probe(),
            probes=self.login_probe() + self.sentry_rate(),
        )
        if all(f.ok for f in findings):
            known_good = self.now.kept_with(self.snapshot, settings.rls_schemas).model_dump()
            if saved != known_good:
                store.save_snapshot(SNAPSHOT, self.target.resource, known_good)
        return Detection(resource=self.target.resource, findings=findings)

    def diagnose(self, detection: Detection) -> Diagnosis:
        """The diff per policy, recent commits touching auth or migrations."""
        diff, settings = self.diff, self.settings
        evidence = [
            Finding(check="policy-diff", ok=False, detail=line)
            for line in (diff.lines() if diff else [])
        ]
        self.commits = []
        if settings.app_repo:
            self.commits = git.recent_commits(
                settings.app_repo, since_hours=self.params.since_hours, paths=AUTH_PATHS
            )
            evidence += [
                Finding(
                    check="recent-commit",
                    ok=True,
                    detail=f"{c.sha[:10]} {c.author}: {c.subject} ({', '.join(c.files[:3])})",
                )
                for c in self.commits
            ]
        causes = []
        if diff is not None and (diff.missing or diff.changed or diff.extra):
            causes.append("policy-changed")
        if diff is not None and diff.rls_off:
            causes.append("rls-disabled")
        if diff is not None and diff.opened:
            causes.append("access-opened")  # a security incident: P1, the security team at once
        if diff is not None and diff.no_policy:
            causes.append("no-policy")
        if diff is not None and diff.functions:
            causes.append("function-changed")
        if self.commits:
            causes.append("recent-auth-commits")
        return Diagnosis(causes=causes, evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """Restore the snapshot (never more), or revert the suspect commit."""
        diff, snapshot, settings = self.diff, self.snapshot, self.settings
        if diff is not None and diff.managed_functions:
            owners = sorted(
                {MANAGED_FUNCTION_SCHEMAS[f.schema_name] for f in diff.managed_functions}
            )
            raise Escalate(
                "no automatic fix: the function(s) "
                + ", ".join(f.signature for f in diff.managed_functions)
                + f" the policies call changed; they belong to {', '.join(owners)}, whose own"
                " migrations define them: this runbook never replaces them. Compare with the"
                " service's release (the snapshot's definition is in the incident store)"
            )
        if snapshot is not None and diff is not None and not diff.empty:
            plan = plan_rollback(
                diff,
                snapshot,
                resource=self.target.resource,
                migrations_dir=settings.migrations_dir,
            )
            widened = widens(plan, snapshot)
            if widened:
                raise Escalate(
                    f"refused: the plan would create policies not in the snapshot: {widened}",
                    plan=plan,
                )
            return plan
        if snapshot is not None and self.commits and settings.app_repo:
            return plan_revert(
                self.commits[0], resource=self.target.resource, repo=settings.app_repo
            )
        reason = (
            "no known-good snapshot to roll back to"
            if snapshot is None
            else "the policies match the snapshot and no recent commit touched auth: the cause"
            " is elsewhere (auth server, configuration)"
        )
        raise Escalate(f"no automatic fix: {reason}")

    def recheck(self, plan: Plan) -> Plan:
        if self.read_state() != self.now:
            raise RuntimeError("the policies or their functions changed since the plan was made")
        return plan

    def act(self, plan: Plan) -> list[ActionResult]:
        action = plan.actions[0]
        if action.name == REVERT:
            assert self.settings.app_repo is not None
            new = git.revert_commit(self.settings.app_repo, sha=action.params["sha"])
            return [
                ActionResult(
                    name=REVERT,
                    destructive=True,
                    executed=True,
                    targets=action.targets,
                    detail=f"reverted in commit {new[:10]}; push and deploy it",
                )
            ]
        rls.apply_rollback(
            self.target,
            drop=[Policy(**p) for p in action.params["drop"]],
            create=[Policy(**p) for p in action.params["create"]],
            enable_rls=action.params["enable_rls"],
            functions=[Function(**f) for f in action.params.get("functions", [])],
        )
        detail = "applied in one transaction"
        if self.settings.migrations_dir:
            path = rollback_file(self.settings.migrations_dir, action.statements, now=time.time())
            detail += f"; written to {path}"
        return [
            ActionResult(
                name=ROLLBACK,
                destructive=True,
                executed=True,
                targets=action.targets,
                detail=detail,
            )
        ]

    def verify(self) -> list[Finding]:
        """Policies equal the snapshot and the probe passes."""
        after, _ = detect(
            self.read_state(),
            self.snapshot,
            self.protected,
            self.access_probe(),
            probes=self.login_probe(),
        )
        return [f.model_copy(update={"check": f.check + "-after"}) for f in after]


# The flow the class built (already in the module under this name), spelt out for the type
# checker: the drills import it by name.
rls_auth_failure: Flow[..., Outcome] = RlsAuthFailure.flow
