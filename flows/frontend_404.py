"""Seed 000, "Frontend 404 Errors" (P3): deep links of the SPA return 404 in production.

Detect: deep links (`deep_links`) of `FRONTEND_URL` answer 404 instead of the app shell.
Diagnose: the build output is served (`/index.html` and the assets it references), and the
history fallback (an unknown route answered with the app shell). Remediate (approval): restart
the frontend container after a redeploy of `dist/` (its server reads its files and routing at
start). Verify: every deep link answers 200 with the app shell.
"""

from __future__ import annotations

import re
import uuid

import httpx
from prefect.cache_policies import NONE
from pydantic import BaseModel

from remediate.domain.errors import ConfigError
from remediate.domain.models import Diagnosis, Finding, Plan
from remediate.engine import targets
from remediate.engine.actions import (
    RestartsOneService,
    recheck_restart,
    restart_action,
    wait_until_ok,
)
from remediate.engine.runbook import Detection, Escalate, RunbookParameters
from remediate.tasks import containers
from remediate.tasks.containers import ComposeService
from remediate.tasks.steps import task

RUNBOOK = "frontend-404"
RESTART = "restart-frontend-container"
ASSET = re.compile(r"""(?:src|href)=["'](/[^"']+\.(?:js|css))["']""")
PREVENTION = (
    "serve index.html for unknown routes (nginx: try_files $uri /index.html); a smoke test of"
    " deep links after each deploy; check vite's `base` and the router's basepath"
)


class Page(BaseModel):
    path: str
    status: int | None
    shell: bool


@task(name="fetch-pages", cache_policy=NONE, tags=["http", "read-only"])
def fetch_pages(base_url: str, *, paths: list[str]) -> tuple[str, list[Page]]:
    """The app shell (`/`) and each path: status, and whether it is the app shell."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=10) as client:
        try:
            shell = client.get("/").text
        except httpx.HTTPError:
            shell = ""
        pages = []
        for path in paths:
            try:
                response = client.get(path)
                pages.append(
                    Page(
                        path=path,
                        status=response.status_code,
                        shell=bool(shell) and response.text == shell,
                    )
                )
            except httpx.HTTPError:
                pages.append(Page(path=path, status=None, shell=False))
    return shell, pages


def page_finding(page: Page, check: str) -> Finding:
    ok = page.status == 200 and page.shell
    return Finding(
        check=check,
        ok=ok,
        detail=f"{page.path}: HTTP {page.status}"
        + ("" if ok else " (not the app shell)" if page.status == 200 else ""),
    )


def deep_links_finding(pages: list[Page]) -> Finding:
    """Every deep link answered with the app shell, as one finding (verification)."""
    failing = [page_finding(p, "deep-link-after") for p in pages]
    bad = [f.detail for f in failing if not f.ok]
    return Finding(
        check="deep-links-after",
        ok=not bad,
        detail="; ".join(bad) or f"{len(pages)} deep link(s) serve the app shell",
    )


class Frontend404(RestartsOneService):
    """Seed 000: SPA deep links 404 → check dist/ and the fallback → restart after a redeploy."""

    id = RUNBOOK  # seed, severity, summary…: its line of the catalogue
    impact = "users opening a link get a 404 page"
    prevention = PREVENTION

    class Parameters(RunbookParameters):
        deep_links: list[str] | None = None
        stop_timeout_seconds: int = 10
        verify_timeout_seconds: float = 30

    params: Parameters
    service: ComposeService | None = None

    def preflight(self) -> None:
        if not self.settings.frontend_url:
            raise ConfigError("FRONTEND_URL is not set (the SPA's base URL)")

    @property
    def url(self) -> str:
        assert self.settings.frontend_url is not None
        return self.settings.frontend_url

    @property
    def links(self) -> list[str]:
        return self.params.deep_links or ["/dashboard", "/login", "/settings/profile"]

    def detect(self) -> Detection:
        """Deep links answer the app shell."""
        self.preflight()
        self.shell, pages = fetch_pages(self.url, paths=self.links)
        return Detection(resource=self.url, findings=[page_finding(p, "deep-link") for p in pages])

    def diagnose(self, detection: Detection) -> Diagnosis:
        """The build output and the history fallback."""
        shell = self.shell
        assets = sorted(set(ASSET.findall(shell)))
        unknown = f"/__remediate_probe_{uuid.uuid4().hex[:8]}"
        _, checked = fetch_pages(self.url, paths=[*assets, unknown])
        evidence = [
            Finding(
                check="index-html",
                ok=bool(shell),
                detail="/ serves the app shell" if shell else "/ does not answer",
            )
        ]
        evidence += [
            Finding(check="asset", ok=p.status == 200, detail=f"{p.path}: HTTP {p.status}")
            for p in checked[:-1]
        ]
        fallback = checked[-1]
        evidence.append(
            Finding(
                check="history-fallback",
                ok=fallback.status == 200 and fallback.shell,
                detail=f"an unknown route ({unknown}) answers HTTP {fallback.status}",
            )
        )
        causes = []
        if not shell:
            causes.append("dist-missing")
        if any(f.check == "asset" and not f.ok for f in evidence):
            causes.append("assets-missing")
        if not evidence[-1].ok:
            causes.append("no-history-fallback")
        return Diagnosis(causes=causes, evidence=evidence)

    def plan(self, detection: Detection, diagnosis: Diagnosis) -> Plan:
        """Restart the frontend container after the redeploy."""
        self.service = service = targets.compose_service(
            self.settings, self.settings.frontend_service
        )
        found = containers.find_service(service) if service else []
        if service is None or not found:
            raise Escalate(
                "no frontend container to restart: fix the server's fallback"
                " (try_files $uri /index.html) and redeploy dist/"
            )
        return Plan(
            runbook=RUNBOOK,
            resource=detection.resource,
            summary=f"restart the frontend service {service.service} after the redeploy",
            actions=[
                restart_action(
                    RESTART,
                    service,
                    found,
                    description="Restart the frontend so that its server reloads the redeployed"
                    " dist/ and routing (it reads them at start). If dist/ or the fallback are"
                    " still wrong, verification fails and escalates.",
                )
            ],
        )

    def recheck(self, plan: Plan) -> Plan:
        """Deep links fixed since: nothing to restart; else the containers still there."""
        assert self.service is not None
        return recheck_restart(
            plan,
            self.service,
            still_broken=lambda: (
                not all(
                    page_finding(page, "deep-link").ok
                    for page in fetch_pages(self.url, paths=self.links)[1]
                )
            ),
        )

    def verify(self) -> list[Finding]:
        """Every deep link answers 200 with the app shell."""
        return [
            wait_until_ok(
                lambda: deep_links_finding(fetch_pages(self.url, paths=self.links)[1]),
                timeout=self.params.verify_timeout_seconds,
            )
        ]
