#!/usr/bin/env python3
"""`make bench` (failover part): how many calls it takes to trip a breaker with the defaults, and
how long from the primary going down until all traffic is on the fallback, under steady load.

Bounded: a few seconds per scenario, every process stopped by PID. Writes a dated results file
under docs/results/ and prints the same table.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warden_testbed import ROOT, WASM, Testbed  # noqa: E402

BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
HEADERS = {"Host": "json.mcp.local", "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "Mcp-Method": "tools/call", "Mcp-Name": "whoami", "MCP-Protocol-Version": "2025-11-25"}


def call(port: int, conn: http.client.HTTPConnection | None = None) -> tuple[str, bool, http.client.HTTPConnection]:
    """(served-by, answered by a healthy server, connection to reuse)."""
    for _ in range(2):
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/mcp", body=BODY, headers=HEADERS)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
            ok = isinstance(data, dict) and "result" in data and not data["result"].get("isError")
            return resp.getheader("x-mcp-warden-served-by") or "", ok, conn
        except (OSError, http.client.HTTPException):
            conn = None
    return "", False, None


def calls_to_trip(fault: str) -> int:
    with Testbed() as tb:
        tb.servers["json_primary"].fault(fault, **({"status": 503} if fault == "http_5xx" else {}))
        port = tb.envoy.listen_port
        for n in range(1, 100):
            served, _, _ = call(port)
            if served == "json_fallback":
                return n - 1
    raise RuntimeError("never tripped")


def failover_time(fault: str, agents: int, duration_s: float = 6.0) -> dict:
    """Steady load from `agents` keep-alive clients; the primary breaks at t0."""
    with Testbed() as tb:
        port = tb.envoy.listen_port
        log: list[tuple[float, str, bool]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def agent():
            conn = None
            while not stop.is_set():
                served, ok, conn = call(port, conn)
                with lock:
                    log.append((time.monotonic(), served, ok))

        threads = [threading.Thread(target=agent) for _ in range(agents)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        tb.servers["json_primary"].fault(fault, **({"status": 503} if fault == "http_5xx" else {}))
        time.sleep(duration_s)
        stop.set()
        for t in threads:
            t.join(15)
        after = [(t, s, ok) for t, s, ok in log if t >= t0]
        bad = [t for t, s, ok in after if s != "json_fallback"]
        last_bad = max(bad) if bad else t0
        first_failure = min((t for t, s, ok in after if not ok), default=t0)
        return {
            "fault": fault,
            "agents": agents,
            "calls_after_fault": len(after),
            "calls_not_on_fallback": len(bad),
            "ms_until_all_on_fallback": round((last_bad - t0) * 1000, 1),
            "ms_first_failure_to_all_on_fallback": round(max(0.0, last_bad - first_failure) * 1000, 1),
            "agent_visible_failures": sum(1 for t, s, ok in after if not ok),
            "throughput_per_s": round(len(after) / duration_s, 1),
        }


def main() -> int:
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "wasm_bytes": WASM.stat().st_size,
        "calls_to_trip": {f: calls_to_trip(f) for f in ("down", "http_5xx")},
        "failover": [failover_time(f, a) for f in ("down", "http_5xx") for a in (1, 8)],
    }
    lines = [
        f"# Failover measurements, {results['date']}",
        "",
        f"Machine: {results['machine']}. Envoy 1.40.0 (--concurrency 2), Python SDK servers, default breaker",
        f"(5 consecutive failures, 10 s open). Filter: {results['wasm_bytes']} bytes (release, stripped).",
        "",
        f"Calls to trip with the defaults: primary down: {results['calls_to_trip']['down']}; "
        f"primary answering 503: {results['calls_to_trip']['http_5xx']}.",
        "",
        "`ms from fault` counts from the moment the fault switch was thrown (the server takes a moment to",
        "stop); `ms from first failure` counts from the first failed call the agents saw.",
        "",
        "| primary fault | agents | calls after fault | not on fallback | ms from fault | ms from first failure | agent-visible failures | calls/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["failover"]:
        lines.append(f"| {r['fault']} | {r['agents']} | {r['calls_after_fault']} | {r['calls_not_on_fallback']} | "
                     f"{r['ms_until_all_on_fallback']} | {r['ms_first_failure_to_all_on_fallback']} | {r['agent_visible_failures']} | {r['throughput_per_s']} |")
    text = "\n".join(lines) + "\n"
    out = ROOT / "docs" / "results" / f"failover-{results['date']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
