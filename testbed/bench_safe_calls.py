#!/usr/bin/env python3
"""`make bench-failover` (safe-calls part): what an agent built on the official TypeScript SDK
sees through the sidecar when its primary misbehaves and the fallback is healthy (Python SDK
servers, stateful SSE, breaker defaults):

(a) the primary answers `initialize` with -32603, with a body that is not JSON-RPC, or with the
    wrong id: does the agent connect, and how many of 40 calls succeed?
(b) the primary turned slow (answers after 20 s) after the agent connected: 12 sequential calls
    of a read-only tool: total time and failures;
(c) the same with an unsafe tool (`increment`): failures before the breaker opens, total time.

Bounded (each run has its own deadline); every process is stopped by PID. Prints a table and
writes it to docs/results/safe-calls-<date>.md.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from agents.ts_runner import TsAgent  # noqa: E402
from warden_testbed import ROOT, Testbed  # noqa: E402

P = "wasmcustom.mcp_warden.cluster."


def initialize_fault(fault: dict) -> dict:
    with Testbed() as tb:
        params = dict(fault)
        tb.servers["demo_primary"].fault(params.pop("mode"), methods=["initialize"], **params)
        agent = TsAgent(tb.url, calls=40, pause_ms=0, timeout_ms=10_000).start()
        try:
            run = agent.wait(120)
        finally:
            agent.kill()
        ok = sum(1 for c in run.calls if c.outcome == "ok")
        return {"connected": agent.connected.is_set(), "calls": len(run.calls), "ok": ok,
                "served_by": sorted({c.served_by or "none" for c in run.calls})}


def slow_primary(tool: str, timeout_ms: int) -> dict:
    with Testbed() as tb:
        agent = TsAgent(tb.url, calls=12, seconds=600, pause_ms=0, timeout_ms=timeout_ms, tool=tool,
                        wait_go=True).start()
        try:
            if not agent.connected.wait(30):
                raise RuntimeError(f"the agent did not connect: {agent.other}")
            tb.servers["demo_primary"].fault("slow", delay_ms=20_000)
            started = time.monotonic()
            agent.go()
            run = agent.wait(400)
            total = time.monotonic() - started
        finally:
            agent.kill()
        failures = [i for i, c in enumerate(run.calls) if c.outcome != "ok"]
        return {
            "calls": len(run.calls),
            "failures": len(failures),
            "failed_calls": failures,
            "total_s": round(total, 2),
            "per_call_ms": [round(c.ms) for c in run.calls],
            "hedged": tb.envoy.stat(f"{P}demo_fallback.hedged"),
            "opened": tb.envoy.stat(f"{P}demo_primary.breaker.opened"),
        }


def main() -> None:
    lines = ["# Safe calls with a sick or slow primary (TypeScript SDK agent, Python SDK servers)", "",
             f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, breaker defaults, "
             "`testbed/bench_safe_calls.py`.", "",
             "## (a) the primary fails `initialize`, the fallback is healthy", "",
             "| primary's answer to initialize | agent connected | calls ok / made | served by |", "|---|---|---|---|"]
    for name, fault in [("JSON-RPC -32603", {"mode": "jsonrpc_error", "code": -32603}),
                        ("200, body not JSON-RPC", {"mode": "garbage"}),
                        ("wrong id", {"mode": "wrong_id"})]:
        r = initialize_fault(fault)
        lines.append(f"| {name} | {r['connected']} | {r['ok']} / {r['calls']} | {', '.join(r['served_by'])} |")
        print(lines[-1], flush=True)
    lines += ["", "## (b), (c) the primary answers after 20 s; 12 sequential calls", "",
              "| tool | failures | total time | per call (ms) | hedged | breaker opened |", "|---|---|---|---|---|---|"]
    for tool, label in [("echo", "echo (read-only)"), ("increment", "increment (unsafe)")]:
        r = slow_primary(tool, timeout_ms=30_000)
        lines.append(f"| {label} | {r['failures']} of {r['calls']} (calls {r['failed_calls']}) | {r['total_s']} s | "
                     f"{r['per_call_ms']} | {r['hedged']} | {r['opened']} |")
        print(lines[-1], flush=True)
    out = ROOT / "docs" / "results" / f"safe-calls-{datetime.date.today():%Y-%m-%d}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
