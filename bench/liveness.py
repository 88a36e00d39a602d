"""What a run pays for its lease (remediate/engine/liveness.py), against one timeline write in the
same run.

Per run: the lease taken when the incident opens and released at its end (two statements and a
thread started), and one renewal every third of RUN_LEASE_SECONDS while it executes. Baseline:
one `store.record` (the timeline INSERT a run makes ~10 of). Prefect's flow heartbeats, the other
liveness signal, cost ~0.6 s per sync run when they were on (bench/README.md, connection_pool).
"""

from __future__ import annotations

import statistics
import time
import uuid

from common import create_db, drop_db, timed, url
from pydantic import SecretStr

from remediate.domain.settings import load_settings
from remediate.engine.liveness import Lease
from remediate.store.database import Store

ROUNDS = 200


def main() -> None:
    name = f"bench_lease_{uuid.uuid4().hex[:8]}"
    create_db(name)
    try:
        store_url = SecretStr(url(name))
        store = Store.open(store_url)
        settings = load_settings(remediation_database_url=store_url, run_lease_seconds=15)
        incidents = [
            store.open_incident(runbook="rate-limiter", severity="P2", resource="r", title="t").id
            for _ in range(ROUNDS)
        ]
        record = [timed(lambda i=i: store.record(i, "bench")) for i in incidents]

        def lease_cycle(incident_id: str) -> None:
            lease = Lease.take(settings, incident_id=incident_id, flow_run_id=None, run_count=1)
            assert lease is not None
            lease.release()

        cycle = [timed(lambda i=i: lease_cycle(i)) for i in incidents]
        lease_id = store.take_lease(
            incident_id=incidents[0], flow_run_id=None, run_count=1, holder="b", ttl_seconds=15
        )
        renew_lease = Lease(url=store_url, lease_id=lease_id, ttl_seconds=15)
        renew = [timed(renew_lease.renew) for _ in range(ROUNDS)]
        renew_lease.close()
        check = [timed(store.lost_leases) for _ in range(50)]
        store.close()
    finally:
        drop_db(name)
    med = statistics.median
    print(f"liveness, {ROUNDS} rounds, medians ({time.strftime('%Y-%m-%d')})")
    print(f"  baseline: one timeline write            {med(record) * 1000:7.2f} ms")
    print(
        f"  lease taken and released (per run)      {med(cycle) * 1000:7.2f} ms"
        f"  = {med(cycle) / med(record):.1f} x a timeline write"
    )
    print(f"  one renewal (every 5 s while it runs)   {med(renew) * 1000:7.2f} ms")
    print(f"  one check by a receiver (every 5 s)     {med(check) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
