"""Malformed requests and responses never take the wasm VM down, and never hang the agent."""

from __future__ import annotations

import re

from mcp_http import call_tool, initialize, request, rpc, stateless_call, tool_text

MALFORMED_BODIES = [
    b"",
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"null",
    b"[]",
    b"[1, 2, 3]",
    b'{"jsonrpc":"2.0","id":{"nested":[1,2,{"x":null}]},"method":"tools/call","params":"not an object"}',
    b'{"jsonrpc":"2.0","id":1,"method":42}',
    b"[" * 100_000,
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"' + b"x" * 2_000_000 + b'"}}}',
    b"[" + b",".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}' % i for i in range(1000)) + b"]",
]


def assert_vm_healthy(envoy):
    log = envoy.log_text()
    assert not re.search(r"panicked|Function: proxy_on_\w+ failed|wasm.*critical", log), log[-3000:]
    stats = envoy.stats("wasm.mcp_warden")
    assert stats.get("wasm.mcp_warden.vm_reload", 0) == 0, stats


def test_malformed_requests_and_headers(servers, sidecar):
    envoy = sidecar()
    for body in MALFORMED_BODIES:
        for host in (None, "json.mcp.local"):
            a = request(envoy.url, body=body, host=host, timeout=20)
            assert a.status < 500 or a.status == 503, (body[:40], a.status, a.body[:200])
    odd_headers = [
        {"Mcp-Method": "x" * 5000},
        {"Mcp-Method": "tools/call", "Mcp-Name": "\u00e9\u00e9".encode().decode("latin-1")},
        {"MCP-Protocol-Version": "not-a-version"},
        {"Content-Type": "text/plain"},
        {"Mcp-Session-Id": "../../etc/passwd"},
    ]
    for h in odd_headers:
        request(envoy.url, body={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=h, host="json.mcp.local")
    # (GET on a stateless server opens an endless SSE stream; the breaker tests cover GET.)
    for method in ("DELETE", "PUT", "OPTIONS", "PATCH"):
        request(envoy.url, method, host="json.mcp.local", headers={"Accept": "text/event-stream"}, timeout=5)
    assert tool_text(stateless_call(envoy.url, "whoami")) == "json_primary"
    assert_vm_healthy(envoy)


def test_malformed_and_oversized_responses(servers, sidecar):
    envoy = sidecar(breaker={"consecutive_failures": 1000, "minimum_calls": 20, "window_size": 20,
                             "failure_rate_threshold": 100})
    sid = initialize(envoy.url)
    for fault in ("garbage", "wrong_id", "jsonrpc_error"):
        servers["demo_primary"].fault(fault)
        servers["json_primary"].fault(fault)
        call_tool(envoy.url, "whoami", session=sid)
        stateless_call(envoy.url, "whoami")
        rpc(envoy.url, "tools/list", {}, host="json.mcp.local")
    servers["demo_primary"].fault("healthy")
    servers["json_primary"].fault("healthy")
    sid = initialize(envoy.url)
    # A 5 MB answer is over the inspection bound: it passes whole and unjudged.
    big = stateless_call(envoy.url, "big", {"size": 5_000_000}, timeout=30)
    assert len(tool_text(big)) == 5_000_000
    big_sse = call_tool(envoy.url, "big", {"size": 3_000_000}, session=sid, timeout=30)
    assert len(tool_text(big_sse)) == 3_000_000
    assert tool_text(call_tool(envoy.url, "whoami", session=sid)) == "demo_primary"
    assert_vm_healthy(envoy)


def test_malformed_requests_while_degraded(servers, sidecar):
    envoy = sidecar()
    servers["json_primary"].fault("down")
    servers["json_fallback"].fault("down")
    for i in range(12):
        stateless_call(envoy.url, "whoami", id=i)
    for body in MALFORMED_BODIES:
        a = request(envoy.url, body=body, host="json.mcp.local", timeout=20)
        assert a.status in (200, 503), (body[:40], a.status)
        assert a.header("x-mcp-warden-served-by") == "none" or a.status == 200
        msgs = a.messages()
        assert msgs and all("error" in m or m["result"]["isError"] for m in msgs)
    assert_vm_healthy(envoy)
