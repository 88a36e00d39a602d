"""The alert-webhook app (CONTRACT.md, "Alert receiver"): authenticate, normalise, route,
deduplicate, start the runbook's deployment, and answer 202 at once with the flow run ids.

Bad input is always a 4xx with a one-line `error` (401 unauthenticated, 413 too large, 422 naming
the field, 404 unknown route); the only 5xx is a 503 when the Prefect server cannot take a run (or
another request's run of the same incident is still not created after a wait), so that the sender
retries and nothing is lost. Signed approval links are answered here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from remediate.domain.models import Alert
from remediate.domain.settings import ConfigError, Settings
from remediate.engine import approval, approval_links
from remediate.intake import sources
from remediate.intake.dispatch import Accepted, Dispatcher, Rejected
from remediate.intake.routing import Route
from remediate.intake.starter import Starter
from remediate.receiver import slack
from remediate.store.database import Store
from remediate.tasks.slack import mrkdwn

__all__ = ["Receiver", "create_app"]

log = logging.getLogger("remediate.receiver")
SLACK_WINDOW_SECONDS = 300  # Slack's own advice: refuse requests older than five minutes
SENTRY_WINDOW_SECONDS = 300


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)[:20]
    ]


def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = _field_errors(exc)
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        raise Rejected(
            422,
            "malformed",
            f"{first['field']}: {first['message']}",
            fields=errors,
        ) from None


class Receiver:
    """What the endpoints share: authentication and approval links around the dispatcher."""

    def __init__(
        self,
        settings: Settings,
        *,
        starter: Starter | None = None,
        store: Store | None = None,
        extra_routes: Sequence[Route] = (),
    ) -> None:
        if settings.alert_webhook_token is None and settings.sentry_client_secret is None:
            raise ConfigError(
                "ALERT_WEBHOOK_TOKEN is not set (nor SENTRY_CLIENT_SECRET): the receiver would"
                " accept nothing"
            )
        self.settings = settings
        self.dispatch = Dispatcher(
            settings, starter=starter, store=store, extra_routes=extra_routes
        )
        self.metrics = self.dispatch.metrics
        self.store = self.dispatch.store

    # Authentication.

    def _bearer_ok(self, request: Request) -> bool:
        token = self.settings.alert_webhook_token
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if token is None or scheme.lower() != "bearer" or not value:
            return False
        return hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode())

    def _sentry_signature_ok(self, request: Request, body: bytes) -> bool:
        secret = self.settings.sentry_client_secret
        signature = request.headers.get("sentry-hook-signature", "")
        if secret is None or not signature:
            return False
        expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().encode("utf-8", "replace"), expected.encode()):
            return False
        # The signature covers the body only: a captured request could be replayed for ever,
        # so its Sentry-Hook-Timestamp must be recent.
        stamp = request.headers.get("sentry-hook-timestamp", "").strip()
        try:
            age = abs(time.time() - float(stamp))
        except ValueError:
            raise Rejected(
                401, "stale", "unauthenticated: Sentry-Hook-Timestamp is missing"
            ) from None
        if age > SENTRY_WINDOW_SECONDS:
            raise Rejected(401, "stale", "unauthenticated: the Sentry request is too old")
        return True

    def authenticate_bearer(self, request: Request) -> None:
        """The bearer token, checked from the headers before any of the body is read."""
        if not self._bearer_ok(request):
            raise Rejected(
                401, "unauthenticated", "unauthenticated: this endpoint needs a bearer token"
            )

    def authenticate(self, request: Request, body: bytes, *, sentry: bool = False) -> None:
        if self._bearer_ok(request) or (sentry and self._sentry_signature_ok(request, body)):
            return
        what = "a bearer token or a Sentry-Hook-Signature" if sentry else "a bearer token"
        raise Rejected(401, "unauthenticated", f"unauthenticated: this endpoint needs {what}")

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.alert_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                raise Rejected(400, "malformed", "Content-Length is not a number") from None
            if too_big:
                raise Rejected(413, "too-large", f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, "too-large", f"the body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # Approval links.

    def link_claims(self, token: str) -> approval_links.LinkClaims:
        secret = self.settings.approval_link_secret
        if secret is None:
            raise Rejected(404, "not-found", "approval links are not enabled here")
        try:
            return approval_links.verify(secret, token)
        except approval_links.LinkError as exc:
            self.metrics.approvals.labels("refused").inc()
            raise Rejected(403, "bad-link", str(exc)) from None

    def answer_link(self, token: str, form: dict[str, str]) -> tuple[str, str]:
        """Carry out a link's answer: (the verdict, who answered)."""
        claims = self.link_claims(token)
        decision = form.get("decision", "")
        if decision not in {"approve", "deny"}:
            raise Rejected(422, "malformed", "decision: must be approve or deny")
        allowed = self.settings.approvers
        # A link made for one approver answers as that approver; a typed name proves nothing.
        approver = claims.approver or form.get("approver", "").strip()[:100]
        if not approver:
            raise Rejected(422, "malformed", "approver: your name is required")
        if allowed and not claims.approver:
            self.metrics.approvals.labels("refused").inc()
            raise Rejected(403, "not-an-approver", "this link was made for no approver")
        if allowed and approver not in allowed:
            self.metrics.approvals.labels("refused").inc()
            raise Rejected(403, "not-an-approver", f"{approver} is not on the approver list")
        used = self.dispatch.store_call(
            lambda: self.store.use_approval_link(
                claims.nonce, flow_run_id=claims.flow_run_id, used_by=approver
            )
        )
        if used is None:
            raise Rejected(503, "store-unavailable", "the incident store is not reachable; retry")
        if not used:
            self.metrics.approvals.labels("reused").inc()
            raise Rejected(409, "used", "this approval link was already used")
        try:
            approval.answer_run(
                claims.flow_run_id,
                approve=decision == "approve",
                approver=approver,
                note=form.get("note", "")[:500] or "answered from a signed link",
                channel="link",
                proof_secret=self.settings.approval_key,
                digest=claims.plan_digest or None,
            )
        except approval.NotWaiting as exc:
            self.metrics.approvals.labels("not-waiting").inc()
            raise Rejected(409, "not-waiting", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the Prefect server refused or is away
            self.metrics.approvals.labels("not-waiting").inc()
            raise Rejected(
                409, "not-waiting", f"the run could not be answered ({type(exc).__name__})"
            ) from None
        self.metrics.approvals.labels(decision).inc()
        return ("approved" if decision == "approve" else "declined"), approver

    def asked_plan(self, claims: approval_links.LinkClaims) -> dict[str, Any] | None:
        """The plan the link's question shows (from the incident's timeline), if the store has
        it."""
        events = self.dispatch.store_call(lambda: self.store.timeline(claims.incident_id)) or []
        for event in reversed(events):
            if event.kind == "approval-asked" and (
                not claims.plan_digest or event.data.get("plan_digest") == claims.plan_digest
            ):
                plan = event.data.get("plan")
                return plan if isinstance(plan, dict) else None
        return None

    # Slack interactivity (CONTRACT.md, "Approvals from Slack").

    def verify_slack(self, request: Request, body: bytes, *, now: float | None = None) -> None:
        """Slack's request signature, before anything else reads the body: 401 otherwise."""
        secret = self.settings.slack_signing_secret
        if secret is None:
            raise Rejected(404, "not-found", "Slack interactivity is not enabled here")
        stamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not stamp.isdigit() or not signature:
            raise Rejected(401, "unauthenticated", "unauthenticated: no Slack signature")
        if abs((now if now is not None else time.time()) - int(stamp)) > SLACK_WINDOW_SECONDS:
            raise Rejected(401, "stale", "unauthenticated: the Slack request is too old")
        base = b"v0:" + stamp.encode() + b":" + body
        expected = (
            "v0=" + hmac.new(secret.get_secret_value().encode(), base, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise Rejected(401, "unauthenticated", "unauthenticated: bad Slack signature")

    def answer_slack(self, click: slack.Click) -> None:
        """Carry out a verified click, then tell the channel through `response_url` what came of
        it (approved by @x at …, or why it was refused). Never raises."""
        try:
            text = self._answer_slack(click)
        except Exception as exc:  # noqa: BLE001 - the click's outcome is always reported
            log.warning("a Slack approval click failed: %s", type(exc).__name__)
            text = f"Not taken: the answer could not be given ({type(exc).__name__})."
        slack.respond(click.response_url, text, attempts=self.settings.notify_attempts)

    def _answer_slack(self, click: slack.Click) -> str:
        who = f"<@{click.user_id}>"
        secret = self.settings.approval_key
        if secret is None:
            return "Not taken: SLACK_SIGNING_SECRET is not set on the receiver."
        try:
            claims = approval_links.verify(secret, click.value)
        except approval_links.LinkError as exc:
            self.metrics.approvals.labels("refused").inc()
            return f"Not taken ({who}): {exc}."
        approver = f"slack:{click.user_id}"
        allowed = self.settings.approvers
        if allowed and approver not in allowed:
            self.metrics.approvals.labels("refused").inc()
            reason = f"{approver} is not on the approver list"
            self.dispatch.store_call(
                lambda: self.store.record(
                    claims.incident_id,
                    "approval-refused",
                    actor=approver,
                    detail=f"{reason} (Slack click by @{click.username})",
                    data={"channel": "slack", "verified": True, "approve": click.approve},
                )
            )
            return f"Not taken: {who} is not on the approver list; the run keeps waiting."
        try:
            approval.answer_run(
                claims.flow_run_id,
                approve=click.approve,
                approver=approver,
                note=f"from Slack by @{click.username}",
                channel="slack",
                proof_secret=secret,
                digest=claims.plan_digest or None,
            )
        except approval.NotWaiting as exc:
            self.metrics.approvals.labels("not-waiting").inc()
            return f"Not taken ({who}): {exc}."
        verdict = "approve" if click.approve else "deny"
        self.metrics.approvals.labels(verdict).inc()
        at = time.strftime("%H:%M:%S UTC", time.gmtime())
        done = "Approved" if click.approve else "Declined"
        return f"{done} by {who} at {at}: {mrkdwn(claims.summary)}"

    def close(self) -> None:
        self.dispatch.close()


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def _plan_html(plan: dict[str, Any] | None, summary: str) -> str:
    """The plan as the approver should see it; every value escaped."""
    if plan is None:
        return f"<p>{html.escape(summary)}</p>"
    e = html.escape
    parts = [f"<p><b>{e(str(plan.get('summary', summary)))}</b></p>"]
    parts += [f"<p><b>Warning:</b> {e(str(n))}</p>" for n in plan.get("notices", [])]
    parts += [
        f"<p><b>Only a person may approve this:</b> {e(str(n))}</p>"
        for n in plan.get("manual_only", [])
    ]
    for action in plan.get("actions", []):
        targets = [str(t) for t in action.get("targets", [])]
        shown = "".join(f"<li><code>{e(t)}</code></li>" for t in targets[:50])
        more = f"<li>… and {len(targets) - 50} more</li>" if len(targets) > 50 else ""
        kind = "destructive" if action.get("destructive") else "safe"
        parts.append(
            f"<h2>{e(str(action.get('name', '')))} ({kind})</h2>"
            f"<p>{e(str(action.get('description', '')))}</p>"
            f"<p>On <code>{e(str(action.get('resource', '')))}</code>; blast radius:"
            f" {len(targets)} object(s)</p><ul>{shown}{more}</ul>"
        )
        statements = [str(x) for x in action.get("statements", [])][:20]
        if statements:
            parts.append("<pre>" + e("\n".join(statements)) + "</pre>")
    return "".join(parts)


def create_app(
    settings: Settings,
    *,
    starter: Starter | None = None,
    store: Store | None = None,
    extra_routes: Sequence[Route] = (),
    watch_leases: bool = False,
) -> FastAPI:
    """The receiver app; `extra_routes` go before the configured ones (the demo's). With
    `watch_leases` (a receiver process, `serve`), it also notices runs whose executor is lost
    (`remediate/engine/liveness.py`)."""
    receiver = Receiver(settings, starter=starter, store=store, extra_routes=extra_routes)
    app = FastAPI(
        title="remediate alert receiver",
        description="Alert webhooks in, runbook runs out (CONTRACT.md).",
        version="1",
        lifespan=_lifespan(receiver, settings, watch_leases=watch_leases),
    )
    app.state.receiver = receiver
    _add_error_handlers(app, receiver)
    _add_alert_routes(app, receiver)
    _add_status_routes(app, receiver)
    _add_approval_routes(app, receiver)
    _add_slack_routes(app, receiver)
    return app


def _lifespan(
    receiver: Receiver, settings: Settings, *, watch_leases: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the lease watcher while it runs (with `watch_leases`), and the
    receiver closed at the end."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher = None
        if watch_leases:
            from remediate.engine.liveness import watch_leases as watch

            watcher = asyncio.create_task(watch(settings))
        yield
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        receiver.close()

    return lifespan


def _add_error_handlers(app: FastAPI, receiver: Receiver) -> None:
    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> Response:
        receiver.metrics.rejected.labels(exc.reason).inc()
        if request.url.path.startswith("/approvals/"):
            return _page("Approval not taken", f"<p>{html.escape(str(exc))}</p>", exc.status)
        headers = {"Retry-After": "10"} if exc.status == 503 else None
        return JSONResponse(
            {"error": str(exc), **exc.extra}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        receiver.metrics.rejected.labels(reason).inc()
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def _take(
    receiver: Receiver,
    request: Request,
    model: type[BaseModel],
    normalise: Callable[[Any], list[Alert]],
    *,
    sentry: bool = False,
) -> JSONResponse:
    """One alert webhook: authenticate, read, parse, normalise, dispatch; 202 with the runs."""
    if not sentry:
        receiver.authenticate_bearer(request)
    body = await receiver.read_body(request)
    receiver.authenticate(request, body, sentry=sentry)
    if sentry:
        resource = request.headers.get("sentry-hook-resource", "")
        chosen = sources.sentry_model(resource)
        if chosen is None:
            if resource == "installation":  # the integration's own lifecycle: nothing to do
                return JSONResponse(Accepted().body(), status_code=202)
            raise Rejected(
                422,
                "malformed",
                "Sentry-Hook-Resource: expected one of " + ", ".join(sources.SENTRY_RESOURCES),
            )
        model = chosen
    payload = _parse(model, body)
    alerts = normalise(payload)
    result = await run_in_threadpool(receiver.dispatch.accept, alerts)
    return JSONResponse(result.body(), status_code=202)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _add_alert_routes(app: FastAPI, receiver: Receiver) -> None:
    @app.post(
        "/alerts/alertmanager", status_code=202, openapi_extra=_schema(sources.AlertmanagerWebhook)
    )
    async def alertmanager(request: Request) -> JSONResponse:
        """Prometheus Alertmanager (webhook payload version 4); bearer token."""
        return await _take(
            receiver, request, sources.AlertmanagerWebhook, sources.from_alertmanager
        )

    @app.post("/alerts/grafana", status_code=202, openapi_extra=_schema(sources.GrafanaWebhook))
    async def grafana(request: Request) -> JSONResponse:
        """Grafana unified alerting's webhook contact point; bearer token."""
        return await _take(receiver, request, sources.GrafanaWebhook, sources.from_grafana)

    @app.post("/alerts/sentry", status_code=202)
    async def sentry(request: Request) -> JSONResponse:
        """Sentry integration webhooks (Sentry-Hook-Resource: event_alert, metric_alert, issue);
        Sentry-Hook-Signature (HMAC-SHA256 of the body with SENTRY_CLIENT_SECRET) or a bearer
        token."""
        return await _take(receiver, request, BaseModel, sources.from_sentry, sentry=True)

    @app.post("/alerts", status_code=202, openapi_extra=_schema(sources.GenericAlert))
    async def generic(request: Request) -> JSONResponse:
        """The generic form: runbook, fingerprint, severity, labels, summary; bearer token."""
        receiver.authenticate_bearer(request)
        body = await receiver.read_body(request)
        payload = _parse(sources.GenericAlert, body)
        assert isinstance(payload, sources.GenericAlert)
        from remediate.engine import catalogue

        if payload.runbook is not None and payload.runbook not in catalogue.CATALOGUE:
            raise Rejected(
                422, "malformed", f"runbook: {catalogue.UnknownRunbook(payload.runbook)}"
            )
        result = await run_in_threadpool(receiver.dispatch.accept, sources.from_generic(payload))
        return JSONResponse(result.body(), status_code=202)


def _add_status_routes(app: FastAPI, receiver: Receiver) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        # In a thread: the store's gauges are read at scrape time and must not hold the loop.
        text = await run_in_threadpool(generate_latest, receiver.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)


def _add_approval_routes(app: FastAPI, receiver: Receiver) -> None:
    @app.get("/approvals/{token}", response_class=HTMLResponse)
    async def approval_form(token: str) -> HTMLResponse:
        """The plan (actions, targets, blast radius) and a form; opening the link changes
        nothing."""
        claims = receiver.link_claims(token)
        plan = await run_in_threadpool(receiver.asked_plan, claims)
        expires = time.strftime("%H:%M:%S UTC", time.gmtime(claims.expires_at))
        who = (
            f"<p>You answer as <b>{html.escape(claims.approver)}</b>.</p>"
            if claims.approver
            else "<label>Your name <input name='approver' required></label>"
        )
        return _page(
            "Approval needed",
            _plan_html(plan, claims.summary)
            + f"<p>Incident {html.escape(claims.incident_id)}, flow run"
            f" {html.escape(claims.flow_run_id)}, plan {html.escape(claims.plan_digest[:12])}."
            f" This link works once, until {expires}.</p>"
            f"<form method='post'>{who} <label>Note <input name='note'></label>"
            " <button name='decision' value='approve'>Approve</button>"
            " <button name='decision' value='deny'>Decline</button></form>",
        )

    @app.post("/approvals/{token}", response_class=HTMLResponse)
    async def approval_answer(token: str, request: Request) -> HTMLResponse:
        body = await receiver.read_body(request)
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise Rejected(422, "malformed", "the form could not be read") from None
        form = {name: values[0] for name, values in fields.items() if values}
        verdict, who = await run_in_threadpool(receiver.answer_link, token, form)
        return _page(f"Plan {verdict}", f"<p>Thank you, {html.escape(who)}.</p>")


def _add_slack_routes(app: FastAPI, receiver: Receiver) -> None:
    @app.post("/slack/interactions")
    async def slack_interactions(request: Request) -> Response:
        """Slack's interactivity callback (`block_actions`): the signature is checked first, the
        answer is given after Slack has its 200, and the message then says what came of it."""
        body = await receiver.read_body(request)
        receiver.verify_slack(request, body)
        click = slack.parse_click(body)
        if click is None:  # another interaction (a view, a shortcut): nothing to do
            return Response(status_code=200)
        return Response(status_code=200, background=BackgroundTask(receiver.answer_slack, click))
