#!/usr/bin/env python3
"""A demo agent for the containerised testbed and the Istio example: the official MCP Python SDK
client calls one tool on each MCP server URL through the sidecar, once per interval, and prints who
answered (the `whoami` tool of testbed/servers/fault_server.py answers with the server's name), or
the degraded answer mcp-warden gave instead.

    python agent.py --url http://sidecar:10000/mcp --url http://json.mcp.local:10000/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from mcp import Client


def log(url: str, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {url:<48} {text}", flush=True)


async def follow(url: str, tool: str, interval: float) -> None:
    """Calls `tool` on `url` forever; a lost connection (the sidecar restarting) opens a new one."""
    n = 0
    while True:
        try:
            async with Client(url, mode="auto") as client:
                while True:
                    n += 1
                    result = await client.call_tool(tool, {})
                    text = " ".join(getattr(c, "text", "") for c in result.content)
                    log(url, f"call {n:>4}  {'degraded: ' if result.is_error else ''}{text}")
                    await asyncio.sleep(interval)
        except Exception as e:  # noqa: BLE001 - a demo keeps going whatever happens
            log(url, f"call {n:>4}  no connection ({type(e).__name__}: {e}); retrying")
            await asyncio.sleep(max(interval, 2.0))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True, help="MCP endpoint through the sidecar (repeatable)")
    parser.add_argument("--tool", default="whoami", help="tool to call, without arguments (default whoami)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between calls (default 1)")
    args = parser.parse_args()
    await asyncio.gather(*(follow(u, args.tool, args.interval) for u in args.url))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
