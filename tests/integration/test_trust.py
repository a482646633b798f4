"""Trust across the mesh: two Envoy sidecars, one aggregator, real SDK servers."""

from __future__ import annotations

import socket
import time

import pytest
from mcp_http import stateless_call, tool_text
from warden_testbed import (AGGREGATOR_CLUSTER, TESTBED_TOKENS, Aggregator, Envoy, bootstrap, demo_servers,
                            free_port, trust_plugin, wait_until)

P = "wasmcustom.mcp_warden.cluster."
POLL_MS = 500

# A fast model for the testbed: evidence halves every 30 s instead of 10 min.
FAST = {"trust": {"performance_half_life_ms": 30_000}}


def start_sidecar(servers, aggregator: Aggregator, name: str, token: str, breaker: dict | None = None,
                  host: str = "wasm", **trust_extra) -> Envoy:
    plugin = {"servers": demo_servers(),
              "trust": trust_plugin(name, token, poll_ms=POLL_MS, report_ms=POLL_MS, **trust_extra)}
    if breaker:
        plugin["breaker"] = breaker
    clusters = {n: ("127.0.0.1", s.port) for n, s in servers.items()}
    clusters[AGGREGATOR_CLUSTER] = ("127.0.0.1", aggregator.port)
    return Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=clusters, plugin=plugin,
                           host=host), concurrency=2).start()


@pytest.fixture
def mesh(servers, warden_host):
    """An aggregator and two sidecars; yields (aggregator, sidecar1, sidecar2, starter)."""
    started: list = []

    def make(config: dict | None = None, tokens: list | None = None, breaker1: dict | None = None, trust1=None):
        agg = Aggregator(config=config or dict(FAST), tokens=tokens or list(TESTBED_TOKENS)).start()
        started.append(agg)
        s1 = start_sidecar(servers, agg, "sidecar-1", "sidecar-1-token-testbed", breaker1, host=warden_host,
                           **(trust1 or {}))
        started.append(s1)
        s2 = start_sidecar(servers, agg, "sidecar-2", "sidecar-2-token-testbed", host=warden_host)
        started.append(s2)
        return agg, s1, s2

    yield make
    for p in reversed(started):
        p.stop()


def server_view(agg: Aggregator, server: str) -> dict:
    """`GET /v1/servers/{server}`: computed at the request, unlike the thresholded scores document."""
    status, _, detail = agg.api("GET", f"/v1/servers/{server}", token="reader-token-testbed")
    return detail if status == 200 else {}


def reported_successes(agg: Aggregator, server: str) -> int:
    """Successful calls the aggregator has counted for `server`, over all reports."""
    return server_view(agg, server).get("traffic", {}).get("success", 0)


def served_by(envoy: Envoy) -> str:
    return stateless_call(envoy.url, "whoami").header("x-mcp-warden-served-by")


@pytest.mark.both_hosts
def test_operator_quarantine_reaches_every_sidecar_within_a_poll_interval(servers, mesh):
    agg, s1, s2 = mesh()
    for s in (s1, s2):
        wait_until(lambda: stateless_call(s.url, "whoami").header("x-mcp-warden-trust"), 5, "a first trust table")
        assert served_by(s) == "json_primary"
    servers["json_primary"].reset_stats()
    status, _, body = agg.api("POST", "/v1/servers/json_primary/quarantine", {"reason": "suspected breach"})
    assert status in (200, 201, 204), body
    t0 = time.monotonic()
    reached = {}
    while len(reached) < 2 and time.monotonic() - t0 < 10:
        for name, s in (("sidecar-1", s1), ("sidecar-2", s2)):
            if name not in reached and served_by(s) == "json_fallback":
                reached[name] = time.monotonic() - t0
        time.sleep(0.02)
    assert set(reached) == {"sidecar-1", "sidecar-2"}, reached
    slowest = max(reached.values())
    print(f"quarantine reached the last sidecar after {slowest * 1000:.0f} ms (poll interval {POLL_MS} ms)")
    # One poll interval, plus the tick that spreads the table to every worker.
    assert slowest < POLL_MS / 1000 * 2 + 0.5
    servers["json_primary"].reset_stats()
    # Quarantined and nothing else left: a degraded answer that says so.
    agg.api("POST", "/v1/servers/json_fallback/quarantine", {"reason": "drill"})
    wait_until(lambda: stateless_call(s2.url, "whoami").header("x-mcp-warden-degraded") == "quarantined", 5,
               "the fallback's quarantine")
    msg = stateless_call(s2.url, "whoami").message()
    assert msg["result"]["isError"] is True
    assert "quarantined" in msg["result"]["content"][0]["text"]
    assert servers["json_primary"].stats()["requests"] == 0  # never called once quarantined
    # Release is an operator's act, and traffic comes back.
    for c in ("json_primary", "json_fallback"):
        agg.api("POST", f"/v1/servers/{c}/release", {"reason": "cleared"})
    wait_until(lambda: served_by(s1) == "json_primary" and served_by(s2) == "json_primary", 5, "the release")
    _, _, audit = agg.api("GET", "/v1/audit")
    entries = audit if isinstance(audit, list) else audit.get("entries", [])
    assert len(entries) >= 4


@pytest.mark.both_hosts
def test_misbehaving_server_loses_trust_and_every_sidecar_avoids_it(servers, mesh):
    # Sidecar 1 only observes here (lenient breaker, trust not enforced) so that its calls keep
    # reaching the server and their failures reach the aggregator as evidence.
    agg, s1, s2 = mesh(breaker1={"consecutive_failures": 100, "minimum_calls": 100, "window_size": 100},
                       trust1={"enforce_min_trust": False})
    assert served_by(s2) == "json_primary"
    servers["json_primary"].fault("jsonrpc_error")
    t0 = time.monotonic()
    crossed = {}
    while time.monotonic() - t0 < 30 and "quarantined" not in crossed:
        stateless_call(s1.url, "whoami")
        state = agg.scores().get("json_primary", {}).get("state")
        if state and state != "trusted" and state not in crossed:
            crossed[state] = time.monotonic() - t0
        time.sleep(0.02)
    print(f"json_primary left 'trusted' after: {crossed}")
    assert "quarantined" in crossed, agg.scores().get("json_primary")
    # Sidecar 2 never saw a failure, yet it no longer sends calls to the primary.
    wait_until(lambda: served_by(s2) == "json_fallback", 3, "sidecar 2 to avoid json_primary")
    assert s2.stat(f"{P}json_primary.failure.jsonrpc_error") == 0
    assert s2.stat(f"{P}json_primary.breaker.opened") == 0
    assert s2.stat(f"{P}json_primary.untrusted") >= 1
    detail = agg.api("GET", "/v1/servers/json_primary", token="reader-token-testbed")[2]
    assert "automatic" in (detail.get("quarantine_reason") or str(detail)).lower()


def test_a_dead_server_behind_default_breakers_loses_trust_mesh_wide(servers, mesh):
    """With default breakers, sidecar 1 sends a dead server only 5 calls and then probes; the calls
    its breaker refused are reported as `circuit_open` evidence, so trust still falls and sidecar 2
    (which never called it) stops preferring it."""
    agg, s1, s2 = mesh()
    servers["json_primary"].fault("down")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        stateless_call(s1.url, "whoami")
        if agg.scores().get("json_primary", {}).get("state") == "degraded":
            break
        time.sleep(0.05)
    print(f"dead json_primary degraded after {time.monotonic() - t0:.1f} s of one agent's traffic")
    assert agg.scores()["json_primary"]["state"] != "trusted"
    time.sleep(POLL_MS * 3 / 1000)  # sidecar 2's next poll
    assert served_by(s2) == "json_fallback"
    assert s2.stat(f"{P}json_primary.untrusted") == 1
    assert s2.stat(f"{P}json_primary.requests") == 0


@pytest.mark.both_hosts
def test_each_sidecar_reports_its_traffic_exactly_once(servers, mesh):
    agg, s1, _ = mesh(config={"trust": {"performance_half_life_ms": 3_600_000}})
    for i in range(40):
        stateless_call(s1.url, "whoami", id=i)

    # Two worker VMs served those calls; one lease holder reports them, each once. The raw
    # counts (the server view's `traffic`), not the scores document: that one is republished only
    # when a score moves by more than 0.005, so a last small batch may not show there.
    wait_until(lambda: reported_successes(agg, "json_primary") >= 40, 10, "the sidecar's reports")
    time.sleep(POLL_MS * 4 / 1000)
    assert reported_successes(agg, "json_primary") == 40


@pytest.mark.both_hosts
def test_a_server_one_sidecar_names_waits_for_a_second_before_it_is_published(servers, mesh):
    # Two sidecar credentials: a server is tracked once both named it (server_admission_quorum 2).
    agg, s1, s2 = mesh(config={**FAST, "sidecar": {"server_admission_quorum": 2}})
    assert stateless_call(s1.url, "whoami").header("x-mcp-warden-served-by") == "json_primary"

    def provisional() -> dict:
        _, _, view = agg.api("GET", "/v1/provisional", token="reader-token-testbed")
        return {p["server"]: p for p in view["servers"]}

    wait_until(lambda: "json_primary" in provisional(), 10, "sidecar-1's report of json_primary")
    named = provisional()
    assert named["json_primary"]["named_by"] == ["sidecar-1"], named
    # A sidecar names only clusters of its own configuration.
    assert set(named) <= {"json_primary", "json_fallback", "demo_primary", "demo_fallback"}, named
    assert "json_primary" not in agg.scores()
    # The second sidecar's traffic admits it; the first sidecar's held report counts.
    assert served_by(s2) == "json_primary"
    wait_until(lambda: "json_primary" in agg.scores(), 10, "json_primary admitted")
    wait_until(lambda: reported_successes(agg, "json_primary") >= 2, 10, "both sidecars' calls counted")
    assert "json_primary" not in provisional()
    metrics = agg.api("GET", "/metrics", token=None)[2]
    metrics = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
    assert 'mcp_warden_aggregator_servers_admitted_total{by="sidecars"} 1' in metrics, metrics[-2000:]


def test_sybil_burst_barely_moves_a_score(servers, mesh):
    sybils = [{"token": f"sybil-{i}-token-testbed", "name": f"sybil-{i}", "role": "rater"} for i in range(100)]
    # Slow decay, so that only the ratings move the score during the burst.
    agg, s1, _ = mesh(tokens=list(TESTBED_TOKENS) + sybils, config={"trust": {"performance_half_life_ms": 36_000_000}})
    for i in range(20):
        stateless_call(s1.url, "whoami", id=i)

    wait_until(lambda: reported_successes(agg, "json_primary") >= 20, 10, "the sidecar's reports")
    before = server_view(agg, "json_primary")["score"]
    for i in range(100):
        status, _, body = agg.api("POST", "/v1/ratings", {"subject": {"kind": "server", "name": "json_primary"},
                                                           "value": 0.0}, token=f"sybil-{i}-token-testbed")
        assert status in (200, 201, 202, 204), body
    after = server_view(agg, "json_primary")["score"]
    print(f"100-rater Sybil burst moved json_primary from {before:.4f} to {after:.4f} ({after - before:+.4f})")
    assert 0 < before - after < 0.06
    assert agg.scores()["json_primary"]["state"] == "trusted"


def test_aggregator_down_keeps_the_last_table_and_never_delays_requests(servers, mesh):
    agg, s1, s2 = mesh()
    agg.api("POST", "/v1/servers/json_primary/quarantine", {"reason": "drill"})
    wait_until(lambda: served_by(s1) == "json_fallback", 5, "the quarantine")
    agg.kill()
    t0 = time.monotonic()
    answers = [stateless_call(s1.url, "whoami", id=i) for i in range(30)]
    elapsed = time.monotonic() - t0
    assert {a.header("x-mcp-warden-served-by") for a in answers} == {"json_fallback"}
    assert elapsed < 10
    # Back on the same database: the quarantine (an acknowledged write) is still there.
    agg.proc = None
    agg.start()
    assert agg.scores()["json_primary"]["state"] == "quarantined"


def test_bad_tokens_and_bodies_are_refused(servers, mesh):
    agg, _, _ = mesh()
    batch = {"sidecar": "x", "batch_id": "b1", "servers": []}
    assert agg.api("POST", "/v1/signals", batch, token=None)[0] == 401
    assert agg.api("POST", "/v1/signals", batch, token="wrong")[0] == 401
    assert agg.api("POST", "/v1/signals", batch, token="rater-token-testbed")[0] == 403
    assert agg.api("POST", "/v1/servers/json_primary/quarantine", {"reason": "x"}, token="sidecar-1-token-testbed")[0] == 403
    status, _, body = agg.api("POST", "/v1/signals", b"{not json", token="sidecar-1-token-testbed")
    assert status == 400 and body
    # Oversized: refused from the Content-Length alone (the aggregator does not read the body).
    with socket.create_connection(("127.0.0.1", agg.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/signals HTTP/1.1\r\nHost: agg\r\nAuthorization: Bearer sidecar-1-token-testbed\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n{")
        assert sock.recv(4096).split(b" ")[1] == b"413"

