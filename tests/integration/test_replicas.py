"""Aggregator replicas on one PostgreSQL (Debian's server, started by the session fixture) behind
two real Envoy sidecars whose aggregator cluster lists every replica with health checks.

The leader and one more replica are SIGKILLed in the middle of write bursts (signal batches,
ratings, flags, and an operator's quarantine acknowledged by a replica that is then killed): no
acknowledged write is lost, the survivor takes over the periodic evaluation within one interval,
both sidecars enforce the quarantine, and the audit chain verifies. A replica that loses the
database answers 503 with a clear error and recovers by itself when it is back.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from dataclasses import dataclass, field
from http.client import HTTPException

from mcp_http import stateless_call
from warden_testbed import (AGGREGATOR_CLUSTER, TESTBED_TOKENS, Aggregator, Envoy, bootstrap, demo_servers,
                            free_port, trust_plugin, wait_until)

SIDECAR = "sidecar-1-token-testbed"
RATER = "rater-token-testbed"
SCANNER = "scanner-token-testbed"
OPERATOR = "operator-token-testbed"
READER = "reader-token-testbed"

POLL_MS = 500
EVALUATE_MS = 1000
LOTS = {"per_second": 1_000_000, "burst": 1_000_000}
CONFIG = {
    "trust": {"performance_half_life_ms": 30_000},
    "evaluate_interval_ms": EVALUATE_MS,
    "follow_interval_ms": 200,
    "limits": {"rates": {r: LOTS for r in ("sidecar", "rater", "scanner", "operator", "reader", "unauthenticated")}},
}
LEADS = "this replica now leads the periodic evaluation"

# What a sidecar's Envoy does with several replicas: active health checks on /healthz (a replica
# that lost the database fails them), a replica that refuses connections ejected at once, and no
# panic routing to replicas known to be down.
AGGREGATOR_OPTIONS = {
    AGGREGATOR_CLUSTER: {
        "health_checks": [{
            "timeout": "0.5s", "interval": "0.5s", "no_traffic_interval": "0.5s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"},
        }],
        "outlier_detection": {
            "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 1,
            "consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "5s", "max_ejection_percent": 100,
        },
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }
}

GONE = (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError, OSError)


def start_sidecar(servers, replicas: list[Aggregator], name: str, token: str) -> Envoy:
    plugin = {"servers": demo_servers(),
              "trust": trust_plugin(name, token, poll_ms=POLL_MS, report_ms=POLL_MS)}
    clusters: dict = {n: ("127.0.0.1", s.port) for n, s in servers.items()}
    clusters[AGGREGATOR_CLUSTER] = [("127.0.0.1", r.port) for r in replicas]
    return Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=clusters, plugin=plugin,
                           cluster_options=AGGREGATOR_OPTIONS), concurrency=2).start()


def served_by(envoy: Envoy) -> str:
    return stateless_call(envoy.url, "whoami").header("x-mcp-warden-served-by")


class Client:
    """A client behind a load balancer: each request goes to the next replica; a replica that
    is gone (connection refused) or answers 503 is skipped and the same request is sent to the
    next one, as Envoy's retries would."""

    def __init__(self, replicas: list[Aggregator]):
        self.replicas = replicas
        self.i = 0

    def post(self, path: str, body: dict, token: str) -> tuple[int, dict]:
        status, answer = 0, {}
        for _ in range(len(self.replicas) * 2):
            r = self.replicas[self.i % len(self.replicas)]
            self.i += 1
            try:
                status, _, answer = r.api("POST", path, body, token=token)
            except GONE:
                continue
            if status != 503:
                return status, answer
        return status, answer


@dataclass
class Acked:
    batches: list[tuple[str, str]] = field(default_factory=list)
    ratings: list[tuple[str, float, str]] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sidecar_writer(c: Client, k: int, stop: threading.Event, acked: Acked) -> None:
    i = 0
    while not stop.is_set():
        batch_id, server = f"burst-{k}-{i}", f"burst-{k}"
        i += 1
        status, ack = c.post("/v1/signals", {"sidecar": f"pod-{k}", "batch_id": batch_id,
                                             "servers": [{"server": server, "outcomes": {"success": 1}}]}, SIDECAR)
        if status == 200 and ack.get("batch_id") == batch_id:
            with acked.lock:
                acked.batches.append((server, batch_id))


def rater_writer(c: Client, stop: threading.Event, acked: Acked) -> None:
    i = 0
    while not stop.is_set():
        server, value, comment = f"rated-{i}", (i % 11) / 10, f"c{i}"
        i += 1
        status, _ = c.post("/v1/ratings", {"subject": {"kind": "server", "name": server}, "value": value,
                                           "comment": comment}, RATER)
        if status == 200:
            with acked.lock:
                acked.ratings.append((server, value, comment))


def scanner_writer(c: Client, stop: threading.Event, acked: Acked) -> None:
    i = 0
    while not stop.is_set():
        server, rule = f"flagged-{i // 40}", f"rule-{i}"
        i += 1
        status, _ = c.post("/v1/flags", {"server": server, "severity": "low", "rule": rule}, SCANNER)
        if status == 200:
            with acked.lock:
                acked.flags.append((server, rule))


def leader_of(replicas: list[Aggregator]) -> Aggregator | None:
    leading = [r for r in replicas if LEADS in r.log_text()]
    return leading[0] if len(leading) == 1 else None


def check(agg: Aggregator, acked: Acked, decisions: list[str]) -> None:
    """Every acknowledged write is in the database, seen through `agg`."""
    for server, batch_id in acked.batches:
        status, _, ack = agg.api("POST", "/v1/signals", {"sidecar": "pod", "batch_id": batch_id, "servers": [
            {"server": server, "outcomes": {"success": 1}}]}, token=SIDECAR)
        assert status == 200 and ack["duplicate"] is True, f"acknowledged batch {batch_id} lost: {ack}"
    views: dict[str, dict] = {}

    def view(server: str) -> dict:
        if server not in views:
            status, _, d = agg.api("GET", f"/v1/servers/{server}", token=READER)
            assert status == 200, f"{server}: {status} {d}"
            views[server] = d
        return views[server]

    for server, value, comment in acked.ratings:
        raters = {r["rater"]: r for r in view(server)["ratings"]["raters"]}
        assert (raters["alice"]["value"], raters["alice"].get("comment")) == (value, comment), f"rating of {server}"
    for server, rule in acked.flags:
        assert rule in {f["rule"] for f in view(server)["flags"]}, f"acknowledged flag {rule} on {server} lost"
    _, _, page = agg.api("GET", "/v1/audit?limit=1000", token=OPERATOR)
    reasons = {e["reason"] for e in page["entries"]}
    assert set(decisions) <= reasons, f"acknowledged decisions missing: {set(decisions) - reasons}"
    status, _, v = agg.api("GET", "/v1/audit/verify", token=READER)
    assert status == 200 and v["ok"] is True, f"audit chain: {v}"


def test_killing_the_leader_and_another_replica_mid_burst_loses_nothing(servers, postgres):
    url = postgres.create_database("replicas_kill")
    replicas = [Aggregator(config=CONFIG, tokens=list(TESTBED_TOKENS), db_url=url) for _ in range(3)]
    started: list = []
    try:
        for r in replicas:
            started.append(r.start())
        sidecars = [start_sidecar(servers, replicas, "sidecar-1", "sidecar-1-token-testbed"),
                    start_sidecar(servers, replicas, "sidecar-2", "sidecar-2-token-testbed")]
        started += sidecars
        for s in sidecars:
            wait_until(lambda: stateless_call(s.url, "whoami").header("x-mcp-warden-trust"), 10, "a first trust table")
            assert served_by(s) == "json_primary"
        wait_until(lambda: leader_of(replicas) is not None, 10, "one leader")
        leader = leader_of(replicas)
        victim = next(r for r in replicas if r is not leader)
        survivor = next(r for r in replicas if r is not leader and r is not victim)

        acked, stop = Acked(), threading.Event()
        writers = [threading.Thread(target=sidecar_writer, args=(Client(replicas), k, stop, acked)) for k in range(2)]
        writers += [threading.Thread(target=rater_writer, args=(Client(replicas), stop, acked)),
                    threading.Thread(target=scanner_writer, args=(Client(replicas), stop, acked))]
        for w in writers:
            w.start()
        time.sleep(0.4)
        # The operator's decision, acknowledged by a replica that dies right after.
        status, _, d = victim.api("POST", "/v1/servers/json_primary/quarantine", {"reason": "incident 42"},
                                  token=OPERATOR)
        assert status == 200, d
        before_kill = len(acked.batches) + len(acked.ratings) + len(acked.flags)
        t_kill = time.monotonic()
        leader.kill()
        victim.kill()
        assert all(w.is_alive() for w in writers), "a writer stopped before the kill"
        # The survivor takes over the periodic evaluation (it tries the free lock every follow
        # interval, and evaluates at once).
        wait_until(lambda: LEADS in survivor.log_text(), 10, "the survivor to lead")
        took = time.monotonic() - t_kill
        # Both sidecars, whose aggregator cluster now has one live endpoint, enforce the
        # quarantine acknowledged by the dead replica.
        for s in sidecars:
            wait_until(lambda: served_by(s) == "json_fallback", 10, "the quarantine on every sidecar")
        time.sleep(0.5)
        stop.set()
        for w in writers:
            w.join(15)
            assert not w.is_alive(), "a writer is stuck"
        total = len(acked.batches) + len(acked.ratings) + len(acked.flags)
        assert total > before_kill, "nothing was acknowledged after the kill"
        check(survivor, acked, ["incident 42"])
        # The sidecars' reports of the calls they moved to the fallback reach the survivor (a
        # report is resent, same batch id, until a replica acknowledges it).
        def fallback_calls() -> int:
            status, _, view = survivor.api("GET", "/v1/servers/json_fallback", token=READER)
            return view["traffic"]["success"] if status == 200 else 0
        wait_until(lambda: fallback_calls() > 0, 10, "the sidecars' reports at the survivor")
        # A killed replica restarts, catches up and serves the same document as the survivor.
        victim.proc = None
        victim.start()
        wait_until(lambda: victim.api("GET", "/v1/scores", token=READER)[2]["version"]
                   == survivor.api("GET", "/v1/scores", token=READER)[2]["version"], 5, "the same document")
        print(f"leader and one replica SIGKILLed mid-burst: {total} acknowledged writes all present "
              f"({len(acked.batches)} batches, {len(acked.ratings)} ratings, {len(acked.flags)} flags, "
              f"{before_kill} before the kill); the survivor led after {took * 1000:.0f} ms "
              f"(evaluation interval {EVALUATE_MS} ms); quarantine enforced by both sidecars")
        assert took < EVALUATE_MS / 1000, f"takeover after {took:.2f} s"
    finally:
        for p in reversed(started):
            p.stop()


def test_a_replica_that_loses_the_database_answers_503_and_recovers_by_itself(postgres):
    url = postgres.create_database("replicas_outage")
    agg = Aggregator(config=CONFIG, tokens=list(TESTBED_TOKENS), db_url=url)
    try:
        agg.start()
        batch = {"sidecar": "pod", "batch_id": "before", "servers": [{"server": "w", "outcomes": {"success": 3}}]}
        assert agg.api("POST", "/v1/signals", batch, token=SIDECAR)[0] == 200
        postgres.pause()
        try:
            status, _, body = agg.api("POST", "/v1/signals", dict(batch, batch_id="during"), token=SIDECAR)
            assert status == 503, body
            assert "database is unreachable" in body["error"] and "nothing was written" in body["error"], body
            status, _, health = agg.api("GET", "/healthz")
            assert status == 503 and "unreachable" in health["status"], health
            # Sidecars keep being served the last document.
            assert agg.api("GET", "/v1/scores", token=READER)[0] == 200
        finally:
            postgres.resume()
        # Back by itself: no restart, the same batch is accepted once.
        wait_until(lambda: agg.api("GET", "/healthz")[0] == 200, 10, "the replica to reconnect")
        status, _, ack = agg.api("POST", "/v1/signals", dict(batch, batch_id="during"), token=SIDECAR)
        assert status == 200 and ack["duplicate"] is False, ack
        assert agg.api("POST", "/v1/signals", batch, token=SIDECAR)[2]["duplicate"] is True
        _, _, view = agg.api("GET", "/v1/servers/w", token=READER)
        assert view["traffic"]["success"] == 6
    finally:
        agg.stop()
