"""A failed call is sent again to the fallback within the same agent request, only when safe."""

from __future__ import annotations

import asyncio
import time

from mcp import Client
from mcp_http import call_tool, initialize, request, rpc, stateless_call, tool_text
from warden_testbed import wait_until

P = "wasmcustom.mcp_warden.cluster."
LENIENT = {"consecutive_failures": 50, "minimum_calls": 50, "window_size": 50}


def learn_tools(envoy):
    a = rpc(envoy.url, "tools/list", {}, host="json.mcp.local", headers={"Mcp-Method": "tools/list"})
    assert a.status == 200 and a.message()["result"]["tools"]


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
