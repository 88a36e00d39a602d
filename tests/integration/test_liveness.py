"""Run leases on the real PostgreSQL store: when is an executor declared lost, and by whom.

The lost-executor path end to end (a worker's run killed while it waits, the approval refused,
the claim taken over) is `tests/e2e/test_production_layout.py`'s; here the rule itself."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from pydantic import SecretStr

from remediate.store.database import Store


@pytest.fixture
def store(store_url: str) -> Store:
    return Store.open(SecretStr(store_url))


def incident(store: Store) -> str:
    return store.open_incident(
        runbook="rate-limiter", severity="P2", resource="redis", title="t"
    ).id


def test_an_expired_lease_is_lost_only_after_a_second_look_a_whole_term_later(
    store: Store,
) -> None:
    """Expired once is suspicion; a renewal (an executor back after a store outage) clears it.
    Still expired a whole term after the check that saw it: lost, returned once, and the holder
    can never renew it again."""
    incident_id = incident(store)
    lease = store.take_lease(
        incident_id=incident_id, flow_run_id=None, run_count=1, holder="h:1", ttl_seconds=1
    )
    assert store.lost_leases() == []  # fresh
    time.sleep(1.2)
    assert store.lost_leases() == []  # expired: suspected, not lost
    assert store.renew_lease(lease)  # the executor was only away
    time.sleep(1.2)
    assert store.lost_leases() == []  # suspected again
    time.sleep(1.2)
    lost = store.lost_leases()
    assert [row["incident_id"] for row in lost] == [incident_id]
    assert lost[0]["holder"] == "h:1"
    assert store.lost_leases() == []  # handled once
    assert not store.renew_lease(lease)  # the execution must stand down


def test_many_checkers_declare_a_lost_run_once(store: Store, store_url: str) -> None:
    incident_id = incident(store)
    store.take_lease(
        incident_id=incident_id, flow_run_id=None, run_count=1, holder="h:2", ttl_seconds=1
    )
    time.sleep(1.2)
    store.lost_leases()
    time.sleep(1.3)
    found: list[str] = []

    def check() -> None:
        own = Store(SecretStr(store_url))
        found.extend(str(row["incident_id"]) for row in own.lost_leases())
        own.close()

    threads = [threading.Thread(target=check) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found.count(incident_id) == 1


def test_a_released_lease_is_never_declared_lost(store: Store) -> None:
    incident_id = incident(store)
    lease = store.take_lease(
        incident_id=incident_id, flow_run_id=None, run_count=1, holder="h:3", ttl_seconds=1
    )
    store.release_lease(lease)
    time.sleep(1.2)
    store.lost_leases()
    time.sleep(1.2)
    assert incident_id not in {str(r["incident_id"]) for r in store.lost_leases()}


def test_a_live_run_keeps_its_lease_and_releases_it_at_its_end(
    store: Store, store_url: str
) -> None:
    """The renewing thread keeps a 3 s lease alive across two terms; released, the row is gone."""
    from remediate.domain.settings import load_settings
    from remediate.engine.liveness import Lease

    settings = load_settings(remediation_database_url=SecretStr(store_url), run_lease_seconds=3)
    incident_id = incident(store)
    lease = Lease.take(settings, incident_id=incident_id, flow_run_id=None, run_count=1)
    assert lease is not None
    for _ in range(8):
        time.sleep(1)
        assert incident_id not in {str(r["incident_id"]) for r in store.lost_leases()}
    assert lease.confirm() is None
    lease.release()
    with store._cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM run_leases WHERE incident_id = %s", (incident_id,))
        row = cur.fetchone()
    assert row is not None and row["n"] == 0


def test_a_lease_taken_while_detecting_is_attached_to_the_incident_the_run_opens(
    store: Store,
) -> None:
    """From its first step a run holds a lease without an incident; lost then, it is returned
    with no incident (the flow run is marked Crashed, nothing to escalate). Attached once the run
    opens its incident, it is the incident's; a lease declared lost cannot be attached."""
    early = store.take_lease(flow_run_id="fr-1", run_count=1, holder="h:4", ttl_seconds=1)
    incident_id = incident(store)
    assert store.attach_lease(early, incident_id)
    detecting = store.take_lease(flow_run_id="fr-2", run_count=1, holder="h:5", ttl_seconds=1)
    time.sleep(1.2)
    store.lost_leases()
    time.sleep(1.3)
    lost = {row["flow_run_id"]: row for row in store.lost_leases()}
    assert lost["fr-1"]["incident_id"] == incident_id
    assert lost["fr-2"]["incident_id"] is None
    assert not store.attach_lease(detecting, incident(store))  # too late: stand down


@pytest.mark.usefixtures("prefect_server")
def test_a_run_lost_while_detecting_is_marked_crashed_and_frees_its_claim(
    store: Store, store_url: str
) -> None:
    """A flow run Running on the Prefect server whose lease, taken at its first step, lapsed
    before it opened an incident: the check marks it Crashed (the receiver then lets the next
    alert start a new run) and escalates nothing."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from remediate.domain.settings import load_settings
    from remediate.engine.liveness import notice_lost_runs

    @flow(name="rt-detecting")
    def detecting() -> None:
        return None

    settings = load_settings(remediation_database_url=SecretStr(store_url), run_lease_seconds=3)
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(detecting)
        client.set_flow_run_state(run.id, Running(), force=True)
        run_count = client.read_flow_run(run.id).run_count
        store.take_lease(
            flow_run_id=str(run.id), run_count=run_count, holder="gone:1", ttl_seconds=1
        )
        time.sleep(1.2)
        assert notice_lost_runs(settings, store) == []  # suspected
        time.sleep(1.3)
        [lost] = [r for r in notice_lost_runs(settings, store) if r.flow_run_id == str(run.id)]
        assert lost.incident_id is None and lost.crashed
        assert "before it opened an incident" in lost.detail
        state = client.read_flow_run(run.id).state
    assert state is not None and state.type.value == "CRASHED"


@pytest.mark.usefixtures("prefect_server")
def test_a_lease_never_attached_to_the_incident_its_run_opened_still_escalates_it(
    store: Store, store_url: str
) -> None:
    """The run opened its incident but its lease was not attached to it (the store away at that
    moment, or the process killed in between): lost, it is that incident's loss, escalated, not
    "lost while detecting"."""
    from remediate.domain.settings import load_settings
    from remediate.engine.liveness import notice_lost_runs

    settings = load_settings(remediation_database_url=SecretStr(store_url), run_lease_seconds=3)
    flow_run_id = str(uuid.uuid4())  # no such flow run on the server: nothing to mark Crashed
    opened = store.open_incident(
        runbook="rate-limiter", severity="P2", resource="redis", title="t", flow_run_id=flow_run_id
    )
    store.take_lease(flow_run_id=flow_run_id, run_count=1, holder="gone:9", ttl_seconds=1)
    time.sleep(1.2)
    notice_lost_runs(settings, store)
    time.sleep(1.3)
    [lost] = [r for r in notice_lost_runs(settings, store) if r.flow_run_id == flow_run_id]
    assert lost.incident_id == opened.id
    incident = store.incident(opened.id)
    assert incident is not None and incident.status == "escalated"
    assert "executor-lost" in [e.kind for e in store.timeline(opened.id)]
