"""A failed call is sent again to the fallback within the same agent request, only when safe."""

from __future__ import annotations

import asyncio

from mcp import Client
from mcp_http import rpc, stateless_call, tool_text

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
