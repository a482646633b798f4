"""The sidecar is transparent while servers are healthy: same answers, headers and sessions."""

from __future__ import annotations

import asyncio

import pytest

from mcp import Client
from mcp_http import call_tool, initialize, request, rpc, stateless_call, tool_text


@pytest.mark.both_hosts
def test_sdk_client_as_agent_in_both_protocol_generations(servers, sidecar):
    envoy = sidecar()

    async def run(mode: str):
        async with Client(envoy.url, mode=mode) as client:
            who = await client.call_tool("whoami", {})
            tools = await client.list_tools()
            added = await client.call_tool("add", {"a": 2, "b": 3})
            return who.content[0].text, {t.name for t in tools.tools}, added.content[0].text

    for mode in ("legacy", "auto"):
        who, tools, added = asyncio.run(run(mode))
        assert who == "demo_primary", mode
        assert {"echo", "add", "whoami", "increment"} <= tools
        assert added == "5"
    assert envoy.stat("wasmcustom.mcp_warden.cluster.demo_primary.failure.malformed") == 0
    assert envoy.stat("wasmcustom.mcp_warden.cluster.demo_primary.success") >= 6


def test_sse_session_and_protocol_headers_pass_untouched(servers, sidecar):
    envoy = sidecar()
    sid = initialize(envoy.url)
    a = call_tool(envoy.url, "echo", {"text": "héllo ✓"}, session=sid, id="x-1")
    assert a.status == 200
    assert a.header("content-type").startswith("text/event-stream")
    assert a.header("x-mcp-warden-served-by") == "demo_primary"
    assert a.message()["id"] == "x-1"
    assert tool_text(a) == "héllo ✓"
    # The session id the agent got is the server's own, and it keeps working.
    again = call_tool(envoy.url, "whoami", session=sid)
    assert tool_text(again) == "demo_primary"
    # An unsupported protocol version reaches the server untouched, which refuses it itself.
    bad = call_tool(envoy.url, "whoami", session=sid, version="1999-01-01")
    direct_bad = call_tool(servers["demo_primary"].url, "whoami", session=sid, version="1999-01-01")
    assert bad.status == direct_bad.status == 400
    # An unknown session is the agent's business (404), not a server failure.
    gone = call_tool(envoy.url, "whoami", session="no-such-session")
    assert gone.status == 404
    stats = envoy.stats()
    assert stats["wasmcustom.mcp_warden.cluster.demo_primary.failure.http_5xx"] == 0
    assert stats["wasmcustom.mcp_warden.cluster.demo_primary.failure.malformed"] == 0


@pytest.mark.both_hosts
def test_json_answers_are_byte_for_byte_the_servers(servers, sidecar):
    envoy = sidecar()
    via = stateless_call(envoy.url, "add", {"a": 40, "b": 2}, id=7)
    direct = stateless_call(servers["json_primary"].url, "add", {"a": 40, "b": 2}, id=7)
    assert via.status == direct.status == 200
    assert via.header("content-type") == direct.header("content-type") == "application/json"
    assert via.body == direct.body
    assert via.header("x-mcp-warden-served-by") == "json_primary"


def test_notifications_batches_and_unrouted_requests(servers, sidecar):
    envoy = sidecar()
    note = rpc(envoy.url, "notifications/initialized", id=None, host="json.mcp.local")
    assert note.status == 202
    # Requests for no configured server are not touched by the filter: Envoy's 404 route.
    other = request(envoy.url.replace("/mcp", "/elsewhere"), body={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert other.status == 404
    assert other.header("x-mcp-warden-served-by") is None
    # The agent cannot pick a cluster by sending the route header itself.
    forced = stateless_call(envoy.url, "whoami", headers={"x-mcp-warden-cluster": "json_fallback"})
    assert tool_text(forced) == "json_primary"


def test_tool_errors_and_agent_mistakes_are_not_failures(servers, sidecar):
    envoy = sidecar()
    err = stateless_call(envoy.url, "fail_tool", {"message": "nope"})
    assert err.message()["result"]["isError"] is True
    unknown = rpc(envoy.url, "no/such-method", {}, host="json.mcp.local")
    assert unknown.message()["error"]["code"] == -32601
    bad_params = stateless_call(envoy.url, "add", {"a": "not a number"})
    assert bad_params.status == 200
    stats = envoy.stats()
    failures = {k: v for k, v in stats.items() if ".json_primary.failure." in k and v}
    assert failures == {}
    assert stats["wasmcustom.mcp_warden.cluster.json_primary.success"] == 3
