"""`remediate serve --demo`: the running service fixes a real, local incident end to end.

Once the service is up, the rate-limiter drill's sandbox is built (rate-limit buckets without a
TTL under a key prefix of its own in the local Redis), an Alertmanager alert for it is POSTed to
the service's own receiver, and the run it starts goes through the same path as production: the
deployment, the approval (answer it here, with the signed link, `remediate approve` or the Prefect
UI), the fix, the verification. The sandbox is removed once the incident ends; the service keeps
serving until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import httpx

from remediate.intake.routing import Route

__all__ = ["Demo"]

ALERT_NAME = "RemediateDemoStuckRateLimits"


def _say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def _alert(status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{ALERT_NAME}"}}',
            "status": status,
            "receiver": "remediate",
            "groupLabels": {"alertname": ALERT_NAME},
            "commonLabels": {"alertname": ALERT_NAME, "severity": "warning"},
            "commonAnnotations": {"summary": "rate-limit buckets never refill"},
            "externalURL": "http://alertmanager.demo:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": ALERT_NAME, "severity": "warning"},
                    "annotations": {"summary": "users are rate-limited for good"},
                    "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.demo:9090/graph",
                    "fingerprint": "demo",
                }
            ],
        }
    ).encode()


class Demo:
    """The demo incident: its sandbox, its route, and the thread that drives it."""

    def __init__(self) -> None:
        from remediate.drills import Sandbox
        from remediate.drills.worlds import rate_limiter

        self.sandbox = Sandbox()
        self.world = rate_limiter(self.sandbox)  # sets TARGET_REDIS_URL for the runs
        self.route = Route(
            runbook="rate-limiter", match={"name": ALERT_NAME}, parameters=self.world.params
        )
        self.done = threading.Event()

    def start(self, address: str) -> None:
        threading.Thread(target=self._run, args=(address,), daemon=True).start()

    def close(self) -> None:
        if not self.done.is_set():
            self.sandbox.close()
            self.done.set()

    def _run(self, address: str) -> None:
        try:
            self._drive(address)
        except Exception as exc:  # noqa: BLE001 - the demo must not take the service down
            _say(f"demo: stopped: {type(exc).__name__}: {exc}")
        finally:
            self.sandbox.close()
            _say("demo sandbox removed: " + (", ".join(self.sandbox.removed) or "nothing"))
            self.done.set()

    def _drive(self, address: str) -> None:
        from remediate.domain.settings import load_settings
        from remediate.store.database import Store

        _say("\n== Demo incident (seed 002 §4, rate-limiter) ==")
        for line in self.world.story:
            _say(line)
        token = os.environ.get("ALERT_WEBHOOK_TOKEN", "")
        # Whatever an earlier demo left (stopped while its run waited), that incident is over:
        # its alert resolves first, as Alertmanager's would, so this demo is a new incident.
        httpx.post(
            f"{address}/alerts/alertmanager",
            content=_alert("resolved"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        answer = httpx.post(
            f"{address}/alerts/alertmanager",
            content=_alert(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        body: dict[str, Any] = answer.json()
        _say(f"Alertmanager alert {ALERT_NAME} POSTed: HTTP {answer.status_code} {body}")
        if answer.status_code != 202 or not body.get("flow_run_ids"):
            return
        run_id = body["flow_run_ids"][0]
        settings = load_settings()
        store = Store.open(settings.remediation_database_url)
        asked = False
        deadline = time.monotonic() + settings.approval_timeout_seconds + 120
        while time.monotonic() < deadline:
            incident = store.incident_for_flow_run(run_id)
            if incident is not None and incident.closed_at is not None:
                break
            if incident is not None and not asked:
                events = store.timeline(incident.id)
                question = next((e for e in events if e.kind == "approval-asked"), None)
                if question is not None:
                    asked = True
                    self._ask(
                        run_id, incident.id, settings, str(question.data.get("plan_digest", ""))
                    )
            time.sleep(0.3)
        incident = store.incident_for_flow_run(run_id)
        state = f"{incident.id}: {incident.status}" if incident else "none opened"
        _say(f"\ndemo incident {state}")
        for ok, line in self.world.check():
            _say(f"  [{'ok' if ok else 'FAIL'}] {line}")
        if incident is not None:
            _say(f"  timeline: remediate incident {incident.id}")
        _say("the service keeps running: POST your own alerts, or Ctrl-C to stop")

    def _ask(self, run_id: str, incident_id: str, settings: Any, digest: str) -> None:
        from remediate.engine import approval_links

        _say(f"\nThe run {run_id} waits for an approval of the plan (the Prefect UI shows it).")
        if settings.receiver_public_url and settings.approval_link_secret:
            link = approval_links.approval_link(
                settings.receiver_public_url,
                settings.approval_link_secret,
                flow_run_id=run_id,
                incident_id=incident_id,
                summary="demo: repair the stuck rate-limit buckets",
                ttl_seconds=settings.approval_timeout_seconds,
                plan_digest=digest,
            )
            _say(f"  open once: {link}")
        _say(f"  or: remediate approve {run_id}   (--deny to decline)")
        if sys.stdin.isatty():
            threading.Thread(target=self._prompt, args=(run_id,), daemon=True).start()

    def _prompt(self, run_id: str) -> None:
        import select

        from remediate.engine.approval import answer_run

        _say("  or answer here: approve? [y/N]")
        while not self.done.is_set():
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            if ready:
                yes = sys.stdin.readline().strip().lower() in {"y", "yes"}
                try:
                    answer_run(run_id, approve=yes, approver=_person(), note="demo")
                except Exception as exc:  # noqa: BLE001 - answered elsewhere meanwhile
                    _say(f"  (not taken: {type(exc).__name__})")
                return


def _person() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "demo"
