"""Failure classification, tripping, fallback, half-open recovery and degraded answers, in real
Envoy with real SDK servers."""

from __future__ import annotations

import asyncio
import re

import pytest
from mcp import Client
from mcp_http import call_tool, initialize, request, rpc, stateless_call, tool_text
from warden_testbed import wait_until

P = "wasmcustom.mcp_warden.cluster."

# Every test here runs on both hosts (the wasm filter and the native module).
pytestmark = pytest.mark.both_hosts

def failures(envoy, cluster: str) -> dict[str, int]:
    prefix = f"{P}{cluster}.failure."
    return {k[len(prefix):]: v for k, v in envoy.stats(prefix).items() if v}


# (fault switch, its parameters, the failure kind the filter must count)
FAULTS = [
    ("http_5xx", {"status": 502}, "http_5xx"),
    ("http_5xx", {"status": 429}, "http_429"),
    ("jsonrpc_error", {"code": -32603}, "jsonrpc_error"),
    ("garbage", {}, "malformed"),
    ("wrong_id", {}, "malformed"),
    ("down", {}, "connect_failure"),
    ("slow", {"delay_ms": 3000}, "timeout"),
]


@pytest.mark.parametrize("fault,params,kind", FAULTS, ids=[f[2] + "-" + f[0] for f in FAULTS])
@pytest.mark.parametrize("server", ["demo", "demo-json"])
def test_each_failure_kind_is_counted(servers, sidecar, fault, params, kind, server):
    envoy = sidecar(route_timeout_s=1.0)
    primary = "demo_primary" if server == "demo" else "json_primary"
    host = "json.mcp.local" if server == "demo-json" else None
    sid = initialize(envoy.url) if server == "demo" else None
    servers[primary].fault(fault, **params)
    a = call_tool(envoy.url, "whoami", session=sid, host=host, id=11)
    assert failures(envoy, primary) == {kind: 1}
    assert envoy.stat(f"{P}{primary}.breaker.opened") == 0
    # Whatever broke, the agent gets a well-formed JSON-RPC answer for its id, never a proxy page.
    # A malformed JSON answer (garbage, or the wrong id) is held whole and replaced by the
    # degraded answer; a malformed SSE answer streams through as the server sent it (counted).
    if kind == "connect_failure":
        # It never reached the server, so the filter sent it to the fallback (in a session it
        # opened there for the agent's, on the stateful server).
        assert a.header("x-mcp-warden-retried-from") == primary
        assert tool_text(a) == primary.replace("primary", "fallback")
        assert a.header("mcp-session-id") in (None, sid)
    elif kind in ("http_5xx", "connect_failure", "timeout") or (kind == "malformed" and server == "demo-json"):
        assert a.status == 200, a
        msg = a.message()
        assert msg["id"] == 11
        assert msg["result"]["isError"] is True
        meta = msg["result"]["_meta"]["dev.mcp-warden/unavailable"]
        assert meta["reason"] == "upstream_failed" and meta["failure"] == kind
        assert int(a.header("retry-after")) >= 1


def test_trips_after_the_threshold_then_the_fallback_serves(servers, sidecar):
    envoy = sidecar()
    servers["json_primary"].fault("http_5xx", status=503)
    served = [stateless_call(envoy.url, "whoami", id=i) for i in range(12)]
    by = [a.header("x-mcp-warden-served-by") for a in served]
    # Defaults: 5 consecutive failures trip the breaker; every later call goes to the fallback.
    assert by == ["json_primary"] * 5 + ["json_fallback"] * 7
    assert [tool_text(a) for a in served[5:]] == ["json_fallback"] * 7
    assert servers["json_primary"].stats()["requests"] == 5
    stats = envoy.stats()
    assert stats[f"{P}json_primary.breaker.opened"] == 1
    assert stats[f"{P}json_primary.breaker.state"] == 1
    assert stats[f"{P}json_primary.rejected"] == 7
    assert stats[f"{P}json_fallback.fallback"] == 7
    assert stats[f"{P}json_fallback.success"] == 7
    transitions = re.findall(r"breaker `json_primary` closed -> open: 5 consecutive failures; open for 10000 ms",
                             envoy.log_text())
    assert len(transitions) == 1
    prom = envoy.prometheus()
    assert re.search(r'mcp_warden_cluster_breaker_opened\{mcp_cluster="json_primary"\} 1', prom), prom[:2000]
    assert re.search(r'mcp_warden_cluster_failure_http_5xx\{mcp_cluster="json_primary"\} 5', prom)


def test_failure_rate_trips_with_interleaved_successes(servers, sidecar):
    envoy = sidecar(breaker={"consecutive_failures": 0, "window_size": 10, "minimum_calls": 10,
                             "failure_rate_threshold": 50})
    sid = initialize(envoy.url)
    primary = servers["demo_primary"]
    for i in range(10):
        primary.fault("jsonrpc_error" if i % 2 else "healthy")
        call_tool(envoy.url, "whoami", session=sid if i % 2 == 0 else None, id=i)
    assert envoy.stat(f"{P}demo_primary.breaker.opened") == 1
    assert "failure rate 50.0% over 10 calls" in envoy.log_text()


def test_half_open_probes_bring_traffic_back_to_the_primary(servers, sidecar):
    envoy = sidecar(breaker={"open_duration_ms": 1000, "half_open_probes": 2})
    servers["json_primary"].fault("down")
    for i in range(5):
        stateless_call(envoy.url, "whoami", id=i)
    assert tool_text(stateless_call(envoy.url, "whoami")) == "json_fallback"
    # A failed probe reopens with a doubled interval (the probe's call itself never reached the
    # down server, so the filter retried it on the fallback).
    wait_until(lambda: "json_primary" == stateless_call(envoy.url, "whoami").header("x-mcp-warden-retried-from"),
               5, "a half-open probe to the primary")
    assert "breaker `json_primary` half_open -> open: a half-open probe failed; open for 2000 ms" in envoy.log_text()
    servers["json_primary"].fault("healthy")

    def back_on_primary():
        return tool_text(stateless_call(envoy.url, "whoami")) == "json_primary"

    wait_until(back_on_primary, 6, "traffic back on the primary")
    # The second probe closes it.
    assert tool_text(stateless_call(envoy.url, "whoami")) == "json_primary"
    assert envoy.stat(f"{P}json_primary.breaker.closed") == 1
    assert "breaker `json_primary` half_open -> closed: 2 half-open probes succeeded" in envoy.log_text()
    assert all(tool_text(stateless_call(envoy.url, "whoami", id=i)) == "json_primary" for i in range(5))
    assert envoy.stat(f"{P}json_primary.breaker.state") == 0


def test_degraded_answers_when_nothing_is_healthy(servers, sidecar):
    envoy = sidecar()
    servers["json_primary"].fault("down")
    servers["json_fallback"].fault("down")
    for i in range(10):
        a = stateless_call(envoy.url, "whoami", id=i)
        assert a.status == 200 and a.message()["id"] == i, a  # rewritten connect failures
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 1
    assert envoy.stat(f"{P}json_fallback.breaker.opened") == 1

    # tools/call: a normal tool result with isError and a sentence for the model.
    a = stateless_call(envoy.url, "forecast", id="t-1")
    assert a.status == 200
    assert a.header("x-mcp-warden-served-by") == "none"
    assert a.header("x-mcp-warden-degraded") == "circuit_open"
    retry_after = int(a.header("retry-after"))
    assert 1 <= retry_after <= 10
    msg = a.message()
    assert msg["id"] == "t-1"
    assert msg["result"]["isError"] is True
    text = msg["result"]["content"][0]["text"]
    assert text == (f"Tool 'forecast' on MCP server 'demo-json' is unavailable: circuit open after repeated "
                    f"failures; retry in {retry_after} s; its fallback is unavailable too.")

    # Any other request: a JSON-RPC error with the documented code and structured data.
    lst = rpc(envoy.url, "tools/list", {}, id=5, host="json.mcp.local")
    err = lst.message()["error"]
    assert lst.status == 200 and lst.message()["id"] == 5
    assert err["code"] == -32050
    assert err["data"]["server"] == "demo-json"
    assert err["data"]["reason"] == "circuit_open"
    assert err["data"]["retry_after"] == int(lst.header("retry-after"))
    assert [c["cluster"] for c in err["data"]["clusters"]] == ["json_primary", "json_fallback"]
    assert {c["state"] for c in err["data"]["clusters"]} == {"open"}

    # Batches get one answer per request; notifications, GET and DELETE get 503 + Retry-After.
    batch = request(envoy.url, body=[
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}},
    ], host="json.mcp.local")
    answers = batch.messages()
    assert [m["id"] for m in answers] == [1, 2]
    assert answers[0]["error"]["code"] == -32050 and answers[1]["result"]["isError"] is True
    note = rpc(envoy.url, "notifications/initialized", id=None, host="json.mcp.local")
    assert note.status == 503 and note.header("retry-after")
    get = request(envoy.url, "GET", host="json.mcp.local", headers={"Accept": "text/event-stream"})
    assert get.status == 503 and get.header("retry-after")
    garbage = request(envoy.url, body=b"{not json", host="json.mcp.local")
    assert garbage.status == 503 and garbage.message()["error"]["code"] == -32050
    assert envoy.stat("wasmcustom.mcp_warden.server.demo-json.degraded") >= 5


def test_sdk_agent_rides_through_a_primary_outage(servers, sidecar):
    """The official SDK client (protocol 2026-07-28) keeps calling while the primary dies: calls
    that never reached it are sent to the fallback at once, so the agent sees no failure at all,
    and after 5 failures the breaker sends everything to the fallback directly."""
    envoy = sidecar()

    async def run():
        seen = []
        async with Client(envoy.url, mode="auto") as client:
            seen.append((await client.call_tool("whoami", {})).content[0].text)
            servers["demo_primary"].fault("down")
            for _ in range(8):
                r = await client.call_tool("whoami", {})
                seen.append(("error: " if r.is_error else "") + r.content[0].text)
        return seen

    seen = asyncio.run(run())
    assert seen == ["demo_primary"] + ["demo_fallback"] * 8
    assert envoy.stat(f"{P}demo_primary.breaker.opened") == 1
    assert envoy.stat(f"{P}demo_fallback.retried") == 5


def test_sdk_agent_gets_readable_errors_for_calls_that_may_have_run(servers, sidecar):
    """`whoami` is not declared read-only or idempotent: when the primary answers 500 the call
    may have run, so it is not repeated; the agent gets a tool error it can read, until the
    breaker opens and the fallback serves."""
    envoy = sidecar()

    async def run():
        seen = []
        async with Client(envoy.url, mode="auto") as client:
            servers["demo_primary"].fault("http_5xx", status=500)
            for _ in range(8):
                r = await client.call_tool("whoami", {})
                seen.append(("error: " if r.is_error else "") + r.content[0].text)
        return seen

    seen = asyncio.run(run())
    assert all(s.startswith("error: Tool 'whoami' on MCP server 'demo' is unavailable") for s in seen[:5]), seen
    assert all("may or may not have run" in s for s in seen[:5])
    assert seen[5:] == ["demo_fallback"] * 3
