"""No safe call lost while a fallback is healthy, with the official TypeScript SDK client as the
agent and Python SDK servers (stateful, SSE answers) as primary and fallback, breaker defaults.

* A primary that answers `initialize` badly (a JSON-RPC -32603, a body that is not JSON-RPC, the
  wrong id): `initialize` is safe to send again, so the agent connects through the fallback and
  its calls succeed.
* A primary that turned slow (answers after 20 s): read-only calls are hedged on the fallback
  past their deadline and the first good answer wins; the slow primary's breaker opens after a
  few such calls. No call fails. (Timings are in `make bench-failover`, not asserted here.)
"""

from __future__ import annotations

import pytest
from agents.ts_runner import TsAgent

P = "wasmcustom.mcp_warden.cluster."


@pytest.mark.parametrize("fault", [
    {"mode": "jsonrpc_error", "code": -32603},
    {"mode": "garbage"},
    {"mode": "wrong_id"},
])
def test_a_primary_failing_initialize_does_not_stop_the_agent(servers, sidecar, fault):
    envoy = sidecar()
    servers["demo_primary"].fault(fault.pop("mode"), methods=["initialize"], **fault)
    agent = TsAgent(envoy.url, name="ts", calls=40, pause_ms=0, timeout_ms=10_000).start()
    try:
        run = agent.wait(90)
    finally:
        agent.kill()
    assert agent.connected.is_set(), agent.other
    assert len(run.calls) == 40, agent.other
    assert [c for c in run.calls if c.outcome != "ok"] == []
    # The primary saw the agent's initialize and failed it; the fallback took the session.
    assert servers["demo_primary"].stats()["by_method"].get("initialize", 0) >= 1
    assert {c.served_by for c in run.calls} == {"demo_fallback"}
    assert envoy.stat(f"{P}demo_fallback.retried") >= 1


def test_read_only_calls_to_a_primary_that_turned_slow_are_hedged(servers, sidecar):
    envoy = sidecar()
    agent = TsAgent(envoy.url, name="ts", calls=12, pause_ms=0, timeout_ms=30_000, tool="echo", wait_go=True).start()
    try:
        assert agent.connected.wait(30), agent.other
        servers["demo_primary"].fault("slow", delay_ms=20_000)
        agent.go()
        run = agent.wait(120)
    finally:
        agent.kill()
    assert len(run.calls) == 12, agent.other
    assert [c for c in run.calls if c.outcome != "ok"] == []
    assert envoy.stat(f"{P}demo_fallback.hedged") >= 1
    assert envoy.stat(f"{P}demo_primary.breaker.opened") >= 1
    # Once open, the fallback serves directly: the last calls were not hedged.
    assert envoy.stat(f"{P}demo_fallback.hedged") < 12
