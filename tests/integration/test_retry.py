"""A failed call is sent again to the fallback within the same agent request, only when safe."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mcp import Client
from mcp_http import call_tool, initialize, request, rpc, stateless_call, tool_text
from warden_testbed import wait_until

P = "wasmcustom.mcp_warden.cluster."
LENIENT = {"consecutive_failures": 50, "minimum_calls": 50, "window_size": 50}


def learn_tools(envoy):
    a = rpc(envoy.url, "tools/list", {}, host="json.mcp.local", headers={"Mcp-Method": "tools/list"})
    assert a.status == 200 and a.message()["result"]["tools"]


@pytest.mark.both_hosts
def test_read_only_calls_are_retried_on_the_fallback(servers, sidecar):
    envoy = sidecar(breaker=LENIENT)
    learn_tools(envoy)
    servers["json_primary"].fault("http_5xx", status=502)
    for i in range(5):
        a = stateless_call(envoy.url, "echo", {"text": f"hi {i}"}, id=i)
        assert a.status == 200
        assert tool_text(a) == f"hi {i}"
        assert a.header("x-mcp-warden-served-by") == "json_fallback"
        assert a.header("x-mcp-warden-retried-from") == "json_primary"
    # Reading methods too.
    lst = rpc(envoy.url, "tools/list", {}, host="json.mcp.local", headers={"Mcp-Method": "tools/list"})
    assert lst.header("x-mcp-warden-served-by") == "json_fallback"
    assert envoy.stat(f"{P}json_fallback.retried") == 6
    assert envoy.stat(f"{P}json_primary.failure.http_5xx") == 6


@pytest.mark.both_hosts
def test_unsafe_calls_are_never_repeated(servers, sidecar):
    envoy = sidecar(breaker=LENIENT)
    learn_tools(envoy)
    servers["json_primary"].fault("http_5xx", status=503)
    a = stateless_call(envoy.url, "increment", id=9)
    msg = a.message()
    assert msg["id"] == 9 and msg["result"]["isError"] is True
    text = msg["result"]["content"][0]["text"]
    assert "may or may not have run" in text
    assert servers["json_fallback"].stats().get("increment_calls", 0) == 0
    assert servers["json_primary"].stats()["by_method"].get("tools/call") == 1
    assert envoy.stat(f"{P}json_fallback.retried") == 0


@pytest.mark.both_hosts
def test_calls_that_never_reached_the_server_are_retried_whatever_they_are(servers, sidecar):
    envoy = sidecar(breaker=LENIENT)
    servers["json_primary"].fault("down")
    a = stateless_call(envoy.url, "increment", id=3)
    assert a.header("x-mcp-warden-served-by") == "json_fallback"
    assert a.message()["result"]["isError"] is False
    assert servers["json_fallback"].stats()["increment_calls"] == 1


def test_sdk_agent_sees_no_failure_for_read_only_calls(servers, sidecar):
    envoy = sidecar(breaker=LENIENT)

    async def run():
        errors = 0
        async with Client(envoy.url.replace("/mcp", "/mcp"), mode="auto") as client:
            await client.list_tools()
            servers["demo_primary"].fault("http_5xx", status=500)
            for i in range(10):
                r = await client.call_tool("echo", {"text": str(i)})
                errors += bool(r.is_error)
        return errors

    assert asyncio.run(run()) == 0
    assert envoy.stat(f"{P}demo_fallback.retried") >= 10


def test_sessions_created_on_the_fallback_stay_there(servers, sidecar):
    envoy = sidecar(breaker={"open_duration_ms": 1000, "half_open_probes": 1})
    servers["demo_primary"].fault("down")
    for i in range(5):
        call_tool_plain(envoy, i)
    assert envoy.stat(f"{P}demo_primary.breaker.opened") == 1
    sid = initialize(envoy.url)  # the breaker is open: the session is created on the fallback
    servers["demo_primary"].fault("healthy")
    time.sleep(1.1)
    wait_until(lambda: envoy.stat(f"{P}demo_primary.breaker.closed") == 1 or call_tool_plain(envoy, 99) and False, 5,
               "the primary's breaker to close")
    # The primary is healthy again, but this session lives on the fallback.
    for i in range(3):
        a = call_tool(envoy.url, "whoami", session=sid, id=i)
        assert a.status == 200, a
        assert tool_text(a) == "demo_fallback"
    # New sessions start on the primary.
    assert tool_text(call_tool(envoy.url, "whoami", session=initialize(envoy.url))) == "demo_primary"
    # Ending the session forgets the pin.
    assert request(envoy.url, "DELETE", headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}).status < 300
    assert call_tool(envoy.url, "whoami", session=sid).status == 404


def call_tool_plain(envoy, i):
    """A session-less (2026-07-28) call to the `demo` server."""
    return rpc(envoy.url, "tools/call", {"name": "whoami", "arguments": {}}, id=i, version="2026-07-28",
               headers={"Mcp-Method": "tools/call", "Mcp-Name": "whoami"})


@pytest.mark.both_hosts
def test_a_session_follows_the_agent_to_the_fallback(servers, sidecar):
    """Session continuity: the sidecar opens a session on the fallback itself (replaying the
    agent's initialize) and maps ids both ways, so the agent keeps its own session id."""
    envoy = sidecar(breaker={"open_duration_ms": 60_000})
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    servers["demo_primary"].fault("down")
    for i in range(5):
        call_tool_plain(envoy, i)
    assert envoy.stat(f"{P}demo_primary.breaker.opened") == 1
    for i in range(3):
        a = call_tool(envoy.url, "echo", {"text": f"still here {i}"}, session=sid, id=10 + i)
        assert a.status == 200, a
        assert tool_text(a) == f"still here {i}"
        assert a.header("x-mcp-warden-served-by") == "demo_fallback"
        assert a.header("mcp-session-id") in (None, sid)
    assert envoy.stat(f"{P}demo_fallback.session_moved") == 1
    # The fallback saw the replayed handshake once, then the agent's calls.
    by_method = servers["demo_fallback"].stats()["by_method"]
    assert by_method.get("initialize") == 1 and by_method.get("notifications/initialized") == 1


def test_sdk_legacy_client_keeps_its_session_through_an_outage(servers, sidecar):
    envoy = sidecar(breaker={"open_duration_ms": 60_000})

    async def run():
        seen, ids = [], set()
        async with Client(envoy.url, mode="legacy") as client:
            seen.append((await client.call_tool("whoami", {})).content[0].text)
            servers["demo_primary"].fault("down")
            for _ in range(8):
                r = await client.call_tool("whoami", {})
                seen.append(("error: " if r.is_error else "") + r.content[0].text)
        return seen

    seen = asyncio.run(run())
    # The first call that hits the dead primary is sent again to the fallback in the same
    # request, after the sidecar opened a session there: the agent sees no failure at all.
    assert seen == ["demo_primary"] + ["demo_fallback"] * 8, seen
    assert envoy.stat(f"{P}demo_fallback.session_moved") == 1
    assert servers["demo_fallback"].stats()["by_method"].get("initialize") == 1


def test_a_call_in_a_session_is_retried_on_the_fallback_in_the_same_request(servers, sidecar):
    envoy = sidecar(breaker=LENIENT)
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    # The sidecar learns which tools are read-only from the tools/list it passes on.
    assert rpc(envoy.url, "tools/list", {}, session=sid, id=2).status == 200
    servers["demo_primary"].fault("http_5xx")
    # Read-only: answered by the fallback in a session the sidecar opened there; the agent's
    # session id is the only one it ever sees.
    a = call_tool(envoy.url, "echo", {"text": "hello"}, session=sid, id=7)
    assert a.status == 200, a
    assert tool_text(a) == "hello"
    assert a.header("x-mcp-warden-served-by") == "demo_fallback"
    assert a.header("x-mcp-warden-retried-from") == "demo_primary"
    assert a.header("mcp-session-id") in (None, sid)
    assert envoy.stat(f"{P}demo_fallback.session_moved") == 1
    # Not safe to repeat after a 5xx (it may have run): a clear answer, never a second run.
    u = call_tool(envoy.url, "increment", session=sid, id=8)
    assert u.status == 200, u
    result = u.message()["result"]
    assert result["isError"] is True and "may or may not" in result["content"][0]["text"]
    assert servers["demo_fallback"].stats()["by_method"].get("tools/call", 0) == 1
    # The next read-only call reuses the session opened on the fallback (no second handshake).
    assert tool_text(call_tool(envoy.url, "echo", {"text": "again"}, session=sid, id=9)) == "again"
    assert servers["demo_fallback"].stats()["by_method"].get("initialize") == 1


@pytest.mark.both_hosts
def test_an_expired_session_is_renewed_where_it_lives(servers, sidecar):
    """A server that lost its sessions (here: restarted) answers 404; the sidecar opens a new
    session there with the agent's own initialize and sends the request again, once."""
    envoy = sidecar(breaker=LENIENT)
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    servers["demo_primary"].fault("down")
    servers["demo_primary"].fault("healthy")
    servers["demo_primary"].reset_stats()
    counts = []
    for i in range(3):
        # increment is not idempotent, but a 404 means nothing ran: safe to send again.
        a = call_tool(envoy.url, "increment", session=sid, id=20 + i)
        assert a.status == 200, a
        assert a.header("x-mcp-warden-served-by") == "demo_primary"
        assert a.header("mcp-session-id") in (None, sid)
        counts.append(int(tool_text(a)))
    # The process's counter (it outlives the restart of the listener) went up by one per call.
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2], counts
    # One handshake replayed; the counter (one step per call above) shows the refused first try never ran:
    # the server received four tools/call, one of them refused with 404 before running.
    by_method = servers["demo_primary"].stats()["by_method"]
    assert by_method.get("initialize") == 1 and by_method.get("tools/call") == 4
    assert envoy.stat(f"{P}demo_primary.session_moved") == 1
    assert envoy.stat(f"{P}demo_primary.breaker.opened") == 0
    # Once the agent ends its session, it is gone for good: no renewal of a deleted session.
    assert request(envoy.url, "DELETE", headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}).status < 300
    assert call_tool(envoy.url, "whoami", session=sid, id=30).status == 404


@pytest.mark.both_hosts
@pytest.mark.parametrize("upstream_timeout_ms", [2000, 0], ids=["filter-owns-timeout", "route-timeout"])
def test_a_renewal_cut_short_by_the_route_timeout_still_answers_well_formed(servers, sidecar, upstream_timeout_ms):
    """The server's 404 dribbles its body while the sidecar renews the session on that same slow
    server: the sidecar answers (degraded) before Envoy's route timeout would. When it does not
    know that timeout (`upstream_timeout_ms` 0), Envoy answers by itself, past the filter, and its
    local reply mapper sends the answer the filter left for that case."""
    envoy = sidecar(breaker=LENIENT, route_timeout_s=2.0, failover={"upstream_timeout_ms": upstream_timeout_ms})
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    servers["demo_primary"].fault("down")
    servers["demo_primary"].fault("slowloris", interval_ms=1000, chunk_bytes=16)
    a = call_tool(envoy.url, "echo", {"text": "late"}, session=sid, id=41)
    assert (a.header("content-type") or "").startswith("application/json"), (a.status, a.body[:200])
    msg = a.message()
    assert msg["id"] == 41 and msg["result"]["isError"] is True, msg


def test_the_filter_sets_the_upstream_timeout_of_mcp_posts(servers, sidecar):
    """`failover.upstream_timeout_ms` replaces the route's timeout (15 s here) for MCP POSTs, so
    the filter knows when Envoy gives up: a 3 s answer is a timeout at 1 s, retried."""
    envoy = sidecar(breaker=LENIENT, route_timeout_s=15.0, failover={"upstream_timeout_ms": 1000})
    learn_tools(envoy)
    servers["json_primary"].fault("slow", delay_ms=3000)
    a = stateless_call(envoy.url, "echo", {"text": "in time"}, id=5)
    assert tool_text(a) == "in time"
    assert a.header("x-mcp-warden-served-by") == "json_fallback"
    assert a.header("x-mcp-warden-retried-from") == "json_primary"
    assert envoy.stat(f"{P}json_primary.failure.timeout") == 1


def test_a_held_notification_cut_by_a_reset_gets_a_well_formed_error(servers, sidecar):
    """The same for a notification (no id): the answer left for Envoy is 503 with a JSON-RPC
    error without id, as the sidecar answers any request without id it cannot deliver."""
    envoy = sidecar(breaker=LENIENT)
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    servers["demo_primary"].fault("down")
    servers["demo_primary"].fault("reset", at="headers")
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
    a = request(envoy.url, "POST", note, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    assert a.status == 503 and a.header("x-mcp-warden-degraded") == "upstream_failed", (a.status, a.body[:200])
    msg = json.loads(a.body)
    assert msg["id"] is None and msg["error"]["data"]["reason"] == "upstream_failed", msg


@pytest.mark.both_hosts
def test_a_held_answer_cut_by_a_reset_still_answers_well_formed(servers, sidecar):
    """The server resets the connection right after its 404 headers, while the sidecar holds them
    to renew the session: Envoy then answers by itself, past the filter, and the answer the filter
    left for that case (Envoy's local reply mapper) is what the agent gets."""
    envoy = sidecar(breaker=LENIENT)
    sid = initialize(envoy.url)
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    servers["demo_primary"].fault("down")
    servers["demo_primary"].fault("reset", at="headers")
    a = call_tool(envoy.url, "echo", {"text": "cut"}, session=sid, id=43)
    assert (a.header("content-type") or "").startswith("application/json"), (a.status, a.body[:200])
    msg = a.message()
    assert msg["id"] == 43, msg
