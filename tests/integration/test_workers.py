"""One breaker per cluster for all Envoy worker threads: state lives in proxy-wasm shared data and
every update is a compare-and-swap."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from mcp_http import stateless_call, tool_text

P = "wasmcustom.mcp_warden.cluster."


def workers_used(envoy) -> int:
    stats = envoy.stats("downstream_cx_total")
    per_worker = {k: v for k, v in stats.items() if re.search(r"^listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$", k)}
    return sum(1 for v in per_worker.values() if v > 0)


def test_failures_on_different_workers_trip_one_shared_breaker(servers, sidecar):
    envoy = sidecar(concurrency=4)
    servers["json_primary"].fault("http_5xx", status=500)
    # Every call opens a new connection, so calls land on different workers.
    for i in range(5):
        stateless_call(envoy.url, "whoami", id=i)
    assert workers_used(envoy) >= 2, "the kernel put every connection on one worker; the test proves nothing"
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 1
    # With one breaker per worker, the other workers would still send calls to the primary.
    after = [stateless_call(envoy.url, "whoami", id=100 + i) for i in range(20)]
    assert [tool_text(a) for a in after] == ["json_fallback"] * 20
    assert servers["json_primary"].stats()["requests"] == 5
    assert workers_used(envoy) >= 3


def test_concurrent_outcomes_are_never_lost(servers, sidecar):
    """199 failures sent concurrently from 8 threads over 4 workers must all land in the one
    window (size 200, trip only at 100% of 200 calls): a lost update would delay the trip."""
    envoy = sidecar(concurrency=4, breaker={"consecutive_failures": 0, "window_size": 200, "minimum_calls": 200,
                                           "failure_rate_threshold": 100})
    servers["json_primary"].fault("http_5xx", status=500)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: stateless_call(envoy.url, "whoami", id=i), range(199)))
    assert {a.header("x-mcp-warden-served-by") for a in answers} == {"json_primary"}
    assert envoy.stat(f"{P}json_primary.failure.http_5xx") == 199
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 0
    stateless_call(envoy.url, "whoami", id=199)
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 1
    assert tool_text(stateless_call(envoy.url, "whoami", id=200)) == "json_fallback"
    assert workers_used(envoy) >= 3
