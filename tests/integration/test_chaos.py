"""The chaos suite's short form (`make chaos` runs the full one): faults on the primaries, the
aggregator and Envoy itself under steady load from raw and SDK agents; no agent may see anything
but a well-formed MCP answer within its deadline, and the system must settle afterwards."""

from __future__ import annotations

import pytest
from chaos.chaos import run
from mcp_http import stateless_call


# The legacy SDK agent pings; the SDK warns that ping is gone from the newer protocol.
@pytest.mark.filterwarnings("ignore:ping is removed")
def test_chaos_short():
    report = run(scale=0.25)
    table = report.table()
    print(table)
    assert not report.violations, table
    failed = [c for c in report.checks if not c[1]]
    assert not failed, table
    by_phase = {r["phase"]: r for r in report.rows}
    # The faults really bit: the breakers tripped, agents got degraded answers when nothing was
    # healthy, and Envoy applied the listener pushes.
    assert sum(report.totals["breaker_trips"].values()) >= 2, report.totals
    assert by_phase["nothing healthy"]["degraded"] > 0, table
    assert report.totals["reloads"] >= 2, report.totals
    assert all(r["requests"] > 0 for r in report.rows), table


@pytest.mark.xfail(strict=True, reason=(
    "an answer the upstream cuts after its headers (RST mid-body, or Envoy's route timeout on a "
    "dribbling answer) reaches the agent as a truncated body: the filter forwards the 200 headers "
    "before the body is complete, so it cannot replace the answer with a degraded one"))
def test_an_answer_cut_after_its_headers_reaches_the_agent_well_formed(servers, sidecar):
    envoy = sidecar()
    servers["json_primary"].fault("reset", at="body")
    a = stateless_call(envoy.url, "increment", id=7)  # today: http.client.IncompleteRead
    msg = a.message()
    assert msg["id"] == 7 and msg["result"]["isError"] is True
