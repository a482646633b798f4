"""The native host (Envoy dynamic module, `make native`): Envoy must report the ABI version as
matched, and a panic inside the module must never take Envoy down. The panic tests run the real
module built with a test-only panic switch (`make native-fault`, feature `fault-injection`)."""

from __future__ import annotations

import pytest
from mcp_http import stateless_call, tool_text
from warden_testbed import NATIVE, ROOT, Envoy, bootstrap, demo_servers, free_port, http_json

NATIVE_FAULT = ROOT / "target" / "fault-injection" / "native" / "libmcp_warden.so"
P = "wasmcustom.mcp_warden.cluster."
PANIC = {"x-mcp-warden-test-panic": "1"}


def native_sidecar(servers, module_dir) -> Envoy:
    return Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(),
                           clusters={n: ("127.0.0.1", s.port) for n, s in servers.items()},
                           plugin={"servers": demo_servers()}, host="native"),
                 concurrency=2, native_dir=module_dir)


@pytest.fixture
def started():
    envoys: list[Envoy] = []
    yield envoys
    for e in envoys:
        e.stop()


def test_envoy_reports_the_abi_version_matched(servers, started):
    """Envoy only warns on an ABI version it does not know and loads the module anyway, where
    a changed signature would corrupt memory silently: require the "matched" line."""
    if not NATIVE.exists():
        pytest.fail(f"{NATIVE} is missing: run `make native`")
    envoy = native_sidecar(servers, NATIVE.parent).start()
    started.append(envoy)
    log = envoy.log_text()
    assert "Dynamic module ABI version v0.2.0 matched." in log, log[-3000:]
    assert "is deprecated" not in log
    # Loaded and serving: the module routes by its own route header.
    answer = stateless_call(envoy.url, "whoami")
    assert answer.header("x-mcp-warden-served-by") == "json_primary"
    assert tool_text(answer) == "json_primary"


def test_a_panic_is_answered_degraded_and_envoy_keeps_serving(servers, started):
    if not NATIVE_FAULT.exists():
        pytest.fail(f"{NATIVE_FAULT} is missing: run `make native-fault`")
    envoy = native_sidecar(servers, NATIVE_FAULT.parent).start()
    started.append(envoy)
    # An open breaker, in the module's process-wide state, before the panic.
    servers["json_primary"].fault("http_5xx", status=503)
    for i in range(5):
        stateless_call(envoy.url, "whoami", id=i)
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 1
    servers["json_primary"].reset_stats()

    crashed = stateless_call(envoy.url, "whoami", id=9, headers=PANIC)
    # The request that panicked gets a well-formed JSON-RPC error for its id, not a dead proxy.
    assert crashed.status == 200, crashed
    msg = crashed.message()
    assert msg["id"] == 9 and msg["error"]["code"] == -32603, msg
    assert msg["error"]["data"]["reason"] == "internal_error"
    assert crashed.header("x-mcp-warden-degraded") == "internal_error"
    log = envoy.log_text()
    assert "a test asked this request to panic" in log
    assert "a panic in request_body was caught" in log
    # Envoy is still up, and the module's state with it: the breaker is still open, so the
    # fallback serves and the broken primary is left alone.
    assert envoy.proc.poll() is None
    assert http_json("GET", f"http://127.0.0.1:{envoy.admin_port}/ready")[0] == 200
    answers = [stateless_call(envoy.url, "whoami", id=20 + i) for i in range(5)]
    assert [a.header("x-mcp-warden-served-by") for a in answers] == ["json_fallback"] * 5, answers
    assert servers["json_primary"].stats()["requests"] == 0


def test_a_panic_before_the_body_is_answered_without_an_id(servers, started):
    """A request with no body to read (a GET) panics at its headers: it still gets a JSON-RPC
    error, with no id (503), and the next request is served."""
    if not NATIVE_FAULT.exists():
        pytest.fail(f"{NATIVE_FAULT} is missing: run `make native-fault`")
    envoy = native_sidecar(servers, NATIVE_FAULT.parent).start()
    started.append(envoy)
    status, headers, body = http_json("GET", envoy.url, headers={"Host": "json.mcp.local", **PANIC})
    assert status == 503, (status, body)
    assert body["id"] is None and body["error"]["code"] == -32603, body
    assert tool_text(stateless_call(envoy.url, "whoami")) == "json_primary"
    assert envoy.proc.poll() is None
