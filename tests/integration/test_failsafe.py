"""Fail-safe modes (docs/DECISIONS.md, "Failure modes"): a VM that fails is replaced and the
breakers, which live in shared data, survive it. The filter under test is the real one built with
a test-only panic switch (`make wasm-fault`, feature `fault-injection`)."""

from __future__ import annotations

import time

import pytest
from mcp_http import stateless_call
from warden_testbed import ROOT, Envoy, bootstrap, demo_servers, free_port

WASM_FAULT = ROOT / "target" / "fault-injection" / "wasm32-wasip1" / "release" / "mcp_warden_filter.wasm"
P = "wasmcustom.mcp_warden.cluster."
PANIC = {"x-mcp-warden-test-panic": "1"}


@pytest.fixture
def faulty_sidecar(servers):
    if not WASM_FAULT.exists():
        pytest.fail(f"{WASM_FAULT} is missing: run `make wasm-fault`")
    started: list[Envoy] = []

    def make(failure_policy: str) -> Envoy:
        envoy = Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(),
                                clusters={n: ("127.0.0.1", s.port) for n, s in servers.items()},
                                plugin={"servers": demo_servers()}, wasm_path=WASM_FAULT,
                                failure_policy=failure_policy), concurrency=1).start()
        started.append(envoy)
        return envoy

    yield make
    for e in started:
        e.stop()


def trip_json_primary(envoy, servers) -> None:
    servers["json_primary"].fault("http_5xx", status=503)
    for i in range(5):
        stateless_call(envoy.url, "whoami", id=i)
    assert envoy.stat(f"{P}json_primary.breaker.opened") == 1
    servers["json_primary"].reset_stats()


def test_a_failed_vm_is_replaced_and_the_open_breaker_survives(servers, faulty_sidecar):
    envoy = faulty_sidecar("FAIL_RELOAD")
    trip_json_primary(envoy, servers)
    vms_before = envoy.stat("wasm.envoy.wasm.runtime.v8.created")
    crashed = stateless_call(envoy.url, "whoami", id=9, headers=PANIC)
    assert crashed.status == 503  # the request that killed its VM: Envoy's own 503
    assert "a test asked this VM to panic" in envoy.log_text()
    # The next requests run in a fresh VM (after the 100 ms reload backoff), which finds the
    # breaker open in shared data: the fallback serves and the broken primary is left alone.
    time.sleep(0.2)
    answers = [stateless_call(envoy.url, "whoami", id=20 + i) for i in range(5)]
    assert [a.header("x-mcp-warden-served-by") for a in answers] == ["json_fallback"] * 5, answers
    assert servers["json_primary"].stats()["requests"] == 0
    assert envoy.stat("wasm.envoy.wasm.runtime.v8.created") > vms_before


def test_fail_open_would_drop_every_protection(servers, faulty_sidecar):
    """Why not FAIL_OPEN: after a VM failure the worker skips the filter, so the route header it
    sets is missing and nothing reaches any MCP server through it (no breaker, no fallback)."""
    envoy = faulty_sidecar("FAIL_OPEN")
    trip_json_primary(envoy, servers)
    stateless_call(envoy.url, "whoami", id=9, headers=PANIC)
    time.sleep(0.2)
    after = stateless_call(envoy.url, "whoami", id=10)
    assert after.header("x-mcp-warden-served-by") is None
    assert after.status == 404 and servers["json_fallback"].stats()["requests"] == 0
