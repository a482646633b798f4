#!/usr/bin/env python3
"""`make run`: start the whole mcp-warden testbed on loopback and show it working, live.

What starts (all real, nothing mocked):
  * four MCP servers built on the official Python SDK, each with a fault switch:
      demo_primary, demo_fallback   stateful sessions, SSE answers      (logical server "demo")
      json_primary, json_fallback   stateless, JSON answers             (logical server "demo-json")
  * Envoy 1.40 (pinned PyPI wheel) with the mcp-warden filter in front of them, 2 worker threads;
  * the trust aggregator, which the sidecar reports to and takes scores and quarantines from.

Then a demo agent (the official SDK client) calls a tool twice a second while the demo breaks the
primary server and heals it again, so you can watch the breaker open, the fallback take over,
and the half-open probes bring traffic back. Afterwards the testbed keeps running until Ctrl-C so
you can try things yourself (the commands are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from warden_testbed import Testbed  # noqa: E402

BOLD, DIM, GREEN, YELLOW, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[31m", "\033[0m"


def say(text: str = "", color: str = "") -> None:
    print(f"{color}{text}{RESET if color else ''}", flush=True)


def banner(tb: Testbed) -> None:
    e = tb.envoy
    s = tb.servers
    say("mcp-warden testbed is up", BOLD)
    say(f"  agent endpoint (Envoy + mcp-warden): {e.url}")
    say(f"  Envoy admin:                         http://127.0.0.1:{e.admin_port}/stats/prometheus")
    if tb.aggregator:
        say(f"  trust aggregator:                    {tb.aggregator.url}/v1/scores  (operator token: operator-token-testbed)")
    for name, srv in s.items():
        say(f"  {name:<14} MCP {srv.url:<32} fault switch {srv.control}/fault")
    say()


def try_yourself(tb: Testbed) -> None:
    e, s = tb.envoy, tb.servers
    say("Try it yourself:", BOLD)
    say(f"""  # call a tool through the sidecar (stateless protocol, JSON answers)
  curl -s {e.url} -H 'Host: json.mcp.local' -H 'Content-Type: application/json' \\
       -H 'Accept: application/json, text/event-stream' -H 'Mcp-Method: tools/call' -H 'Mcp-Name: whoami' \\
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"whoami","arguments":{{}}}}}}' -i

  # break the primary (modes: healthy, slow, http_5xx, jsonrpc_error, garbage, wrong_id, down)
  curl -s {s['json_primary'].control}/fault -d '{{"mode":"http_5xx"}}'
  # ...call 5 more times: the breaker opens and json_fallback answers (see x-mcp-warden-served-by)
  # break the fallback too, and the agent gets a readable degraded answer with Retry-After
  curl -s {s['json_fallback'].control}/fault -d '{{"mode":"down"}}'

  # trust: scores, quarantine and release (operator CLI; any HTTP client works too)
  target/debug/mcp-warden-ctl --url {tb.aggregator.url if tb.aggregator else ''} --token operator-token-testbed scores

  # watch the breakers
  curl -s http://127.0.0.1:{e.admin_port}/stats/prometheus | grep mcp_warden_cluster_breaker
  # Envoy's log (one line per breaker transition): {e.log_path}

Press Ctrl-C to stop everything.""")


@contextlib.asynccontextmanager
async def connected(url: str, step_s: float, attempts: int = 40):
    """A connected SDK client. Its handshake can meet a degraded answer (the quarantine may
    arrive while the fallback's breaker is still open from phase 3): an agent waits and tries
    again, as Retry-After says."""
    for n in range(attempts):
        client = Client(url, mode="auto")
        refused = None
        try:
            entered = await client.__aenter__()
        except* MCPError as group:  # the SDK raises it from its task group
            refused = group
        if refused is None:
            break
        if n == attempts - 1:
            raise refused
        say(f"  connect  degraded: {refused.exceptions[0]}", YELLOW)
        await asyncio.sleep(step_s)
    try:
        yield entered
    finally:
        await client.__aexit__(None, None, None)


async def trust_phases(tb: Testbed, step_s: float) -> None:
    agg = tb.aggregator
    say()
    say("Phase 5: an operator quarantines demo_primary at the trust aggregator:", BOLD)
    say(f"  mcp-warden-ctl --url {agg.url} --token operator-token-testbed quarantine demo_primary --reason 'suspected breach'",
        DIM)
    await asyncio.to_thread(agg.api, "POST", "/v1/servers/demo_primary/quarantine", {"reason": "suspected breach"})
    async with connected(tb.url, step_s) as client:
        for phase in ("quarantine", "release"):
            target = "demo_fallback" if phase == "quarantine" else "demo_primary"
            for n in range(1, 40):
                try:
                    text = (await client.call_tool("whoami", {})).content[0].text
                except MCPError as e:
                    # The SDK checks results against `tools/list`; a degraded answer to that
                    # (the fallback's breaker may still be open from phase 3) surfaces as an
                    # error. An agent waits as Retry-After says and calls again.
                    text = f"degraded: {e}"
                color = GREEN if text == "demo_primary" else YELLOW
                say(f"  call {n:>2}  {text}", color)
                if text == target:
                    break
                await asyncio.sleep(step_s)
            if phase == "quarantine":
                say("Every sidecar stops calling a quarantined server within one poll interval.", GREEN + BOLD)
                say()
                say("Phase 6: the operator releases it (release is always an operator's act).", BOLD)
                await asyncio.to_thread(agg.api, "POST", "/v1/servers/demo_primary/release", {"reason": "cleared"})
    scores = await asyncio.to_thread(agg.scores)
    say("Trust scores at the aggregator:", BOLD)
    for name, s in sorted(scores.items()):
        say(f"  {name:<14} {s['score']:.3f}  {s['state']:<11} {s['breakdown']['explanation']}")


async def demo(tb: Testbed, step_s: float) -> None:
    primary, fallback = tb.servers["demo_primary"], tb.servers["demo_fallback"]

    def heal():
        primary.fault("healthy")
        fallback.fault("healthy")

    phases = [
        (0, "Phase 1: all healthy. The agent's calls go to demo_primary.", None),
        (6, "Phase 2: demo_primary starts answering HTTP 500. `whoami` is declared read-only, so the sidecar "
            "sends each failed call again to demo_fallback: the agent sees no failure. After 5 failures the "
            "breaker opens and calls go to the fallback directly.",
         lambda: primary.fault("http_5xx", status=500)),
        (14, "Phase 3: demo_fallback goes down too. Nothing healthy is left: the agent gets readable "
             "degraded answers, never a hang or a proxy error page.",
         lambda: fallback.fault("down")),
        (22, "Phase 4: both come back. After the open interval, half-open probes test demo_primary.", heal),
    ]
    say("Demo: the official MCP Python SDK client calls `whoami` through the sidecar.", BOLD)
    say(f"{DIM}(each line: call number, who answered, and what the agent saw){RESET}")
    started = time.monotonic()
    async with Client(tb.url, mode="auto") as client:
        n = 0
        phase_idx = -1
        while time.monotonic() - started < 60:
            elapsed = time.monotonic() - started
            while phase_idx + 1 < len(phases) and elapsed >= phases[phase_idx + 1][0]:
                phase_idx += 1
                _, text, action = phases[phase_idx]
                say()
                say(text, BOLD)
                if action:
                    await asyncio.to_thread(action)
            n += 1
            result = await client.call_tool("whoami", {})
            text = result.content[0].text
            state = tb.envoy.stat("wasmcustom.mcp_warden.cluster.demo_primary.breaker.state")
            breaker = {0: "closed", 1: "OPEN", 2: "half-open"}.get(state, "?")
            if result.is_error:
                say(f"  call {n:>2}  degraded    breaker[demo_primary]={breaker:<9} {text}", YELLOW)
            elif text == "demo_primary":
                say(f"  call {n:>2}  demo_primary  breaker[demo_primary]={breaker}", GREEN)
            else:
                say(f"  call {n:>2}  {text}  breaker[demo_primary]={breaker}  (fallback took over)", YELLOW)
            if phase_idx == len(phases) - 1 and text == "demo_primary" and breaker == "closed":
                break
            await asyncio.sleep(step_s)
    say()
    say("The breaker closed again and traffic is back on demo_primary.", GREEN + BOLD)
    if tb.aggregator:
        await trust_phases(tb, step_s)
    stats = tb.envoy.stats("wasmcustom.mcp_warden.cluster.demo_")
    short = {k.replace("wasmcustom.mcp_warden.cluster.", ""): v for k, v in stats.items() if v}
    say("Filter stats (Envoy /stats):", BOLD)
    for k, v in sorted(short.items()):
        say(f"  {k:<55} {v}")
    say("Breaker transitions (Envoy log):", BOLD)
    for line in tb.envoy.log_text().splitlines():
        if "mcp-warden: breaker" in line:
            say("  " + line.split("mcp-warden: ", 1)[1])
    say()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exit-after-demo", action="store_true", help="stop everything when the demo ends")
    parser.add_argument("--no-demo", action="store_true", help="just start the testbed")
    parser.add_argument("--step", type=float, default=0.5, help="seconds between the demo agent's calls")
    parser.add_argument("--host", choices=["wasm", "native"], default="wasm",
                        help="the filter Envoy runs: the .wasm (V8) or the native dynamic module (.so)")
    args = parser.parse_args()

    def interrupt(*_):
        raise KeyboardInterrupt

    # SIGTERM stops the testbed as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupt)
    # A short open interval so the demo shows recovery within a minute.
    tb = Testbed(breaker={"open_duration_ms": 5000, "half_open_probes": 2}, trust=True, host=args.host)
    say("Starting 4 MCP servers and Envoy with the mcp-warden filter...", DIM)
    tb.start()
    try:
        banner(tb)
        if not args.no_demo:
            asyncio.run(demo(tb, args.step))
        if args.exit_after_demo:
            return 0
        try_yourself(tb)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        say("Stopping...", DIM)
        tb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
