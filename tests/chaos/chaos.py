#!/usr/bin/env python3
"""The chaos suite: steady MCP traffic from several agents through one sidecar while faults are
injected in phases, every answer an agent sees checked against mcp-warden's contract.

The system is the testbed's (real Envoy with the filter, official-SDK MCP servers, the trust
aggregator), with two additions: the aggregator is reached through :class:`ChaosProxy` (so it
can be made slow or silent), and Envoy serves its listener over LDS from a watched file (so its
filter configuration can be pushed again while traffic flows, as a control plane does).

Agents (threads): raw JSON-RPC agents on the stateless JSON server and in sessions on the SSE
server, and official SDK clients (`mcp.Client`, both protocol generations). They mix
`tools/list`, read-only and unsafe (`increment`) tool calls, pings and notifications, each with a
deadline. An answer is

* ``ok``: what a healthy server gives;
* ``degraded``: a well-formed MCP failure: a JSON-RPC error object (integer code, text message)
  for the request's id, a tool result with ``isError: true`` and text content, 503 with a
  JSON-RPC error body for a notification, or the SDK raising ``MCPError``;
* ``passthrough``: the injected server's own broken bytes, reaching the agent as the contract
  says they do (a malformed SSE answer inside a 200 streams through, an SSE answer cut after its
  headers is a transport error; JSON answers are held whole and replaced; docs/DECISIONS.md),
  only counted in a phase that injects exactly that;
* ``violation``: anything else: no answer by the deadline, an Envoy text page, an empty or
  unparseable body, a wrong id, a connection cut the phase does not explain, an SDK transport
  exception.

After the faults: no wasm panic in Envoy's log and no VM reload, every breaker closed again
within a bound, no unsafe call executed more often than agents sent it, every rating the
aggregator acknowledged present after its restarts, and the sidecar's reported outcome counts
equal to its own stats (nothing reported twice).

    python tests/chaos/chaos.py            # full run, a few minutes
    python tests/chaos/chaos.py --short    # the CI form (tests/integration/test_chaos.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import random
import re
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "testbed", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from chaos_proxy import ChaosProxy  # noqa: E402
from mcp_http import Answer, request  # noqa: E402
from warden_testbed import (AGGREGATOR_CLUSTER, TESTBED_TOKENS, Aggregator, Envoy, FaultServer,  # noqa: E402
                            bootstrap, demo_servers, free_port, spawn_demo_servers, trust_plugin, wait_until,
                            with_upstream_timeout)

STAT = "wasmcustom.mcp_warden.cluster."
CLUSTERS = ("demo_primary", "demo_fallback", "json_primary", "json_fallback")
PRIMARIES = ("demo_primary", "json_primary")
FALLBACKS = ("demo_fallback", "json_fallback")
JSON_HOST = "json.mcp.local"
# The filter's own bound on a retry on the fallback (filter/src/http.rs RETRY_TIMEOUT_MS).
RETRY_TIMEOUT_S = 10.0
GARBAGE_MARKER = b"this is not json {{{ <garbage>"
PANIC = re.compile(r"panicked|Function: proxy_on_\w+ failed|wasm.*\]\[critical\]|Wasm VM failed")

# Breakers that trip and recover on the scale of a phase; the backoff is capped so that
# "converged within N seconds" is a fair question after a long run of trips.
BREAKER = {"open_duration_ms": 1000, "open_duration_max_ms": 4000, "backoff_reset_ms": 10_000,
           "half_open_probes": 2}
# The aggregator never quarantines by score here and the sidecar does not enforce the minimum
# trust: decisions meant to persist until an operator acts would mask whether the breakers
# themselves converge. Reports, polls and their failures all still happen.
AGGREGATOR_CONFIG = {"trust": {"performance_half_life_ms": 60_000, "quarantine_below": 0.0},
                     "evaluate_interval_ms": 1000}


# ------------------------------------------------------------------------------------------------
# Outcomes


@dataclass
class Outcome:
    phase: str
    agent: str
    op: str
    kind: str  # ok | degraded | passthrough | violation
    latency: float
    detail: str = ""


class Recorder:
    """Every request's outcome, attributed to the phase in which it started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.phase = "setup"
        self.allowed: set[str] = set()  # passthrough kinds the current phase explains
        self.unsafe_sent = 0
        self.inflight: dict[str, tuple[float, str, str]] = {}  # agent -> (started, phase, op)

    def allowed_now(self) -> frozenset[str]:
        with self.lock:
            return frozenset(self.allowed)

    def begin(self, agent: str, op: str) -> tuple[str, frozenset[str], float]:
        with self.lock:
            started = time.monotonic()
            self.inflight[agent] = (started, self.phase, op)
            if op.endswith("increment"):
                self.unsafe_sent += 1
            return self.phase, frozenset(self.allowed), started

    def end(self, agent: str, outcome: Outcome) -> None:
        with self.lock:
            self.inflight.pop(agent, None)
            self.outcomes.append(outcome)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def is_error_object(err: Any) -> bool:
    return isinstance(err, dict) and isinstance(err.get("code"), int) and not isinstance(err.get("code"), bool) \
        and isinstance(err.get("message"), str) and bool(err["message"])


def judge_message(msg: Any, want_id: Any, op: str) -> tuple[str, str]:
    """(kind, detail) of one JSON-RPC answer to a request with id `want_id`."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return "violation", f"not a JSON-RPC 2.0 message: {str(msg)[:160]}"
    if ("result" in msg) == ("error" in msg):
        return "violation", f"both or neither of result/error: {str(msg)[:160]}"
    if "error" in msg:
        if not is_error_object(msg["error"]):
            return "violation", f"malformed error object: {str(msg['error'])[:160]}"
        if msg.get("id") != want_id:
            return "violation", f"error for id {msg.get('id')!r}, sent {want_id!r}"
        return "degraded", f"error {msg['error']['code']}"
    if msg.get("id") != want_id:
        return "violation", f"result for id {msg.get('id')!r}, sent {want_id!r}"
    result = msg["result"]
    if op.startswith("tools/call"):
        if not isinstance(result, dict) or not isinstance(result.get("content"), list):
            return "violation", f"tool result without content: {str(result)[:160]}"
        if result.get("isError") is True:
            texts = [c.get("text") for c in result["content"] if isinstance(c, dict) and c.get("type") == "text"]
            if not texts or not all(isinstance(t, str) and t for t in texts):
                return "violation", f"tool error without text: {str(result)[:160]}"
            return "degraded", "tool isError"
    return "ok", ""


def is_session_not_found(a: Answer) -> bool:
    """The server's own 404 for a session it does not know (a restarted server forgot it)."""
    try:
        msg = json.loads(a.body)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" and is_error_object(msg.get("error"))


def judge_answer(a: Answer, want_id: Any, op: str, allowed: frozenset[str]) -> tuple[str, str]:
    """(kind, detail) of one HTTP answer a raw agent got."""
    if GARBAGE_MARKER in a.body and a.status == 200:
        if "garbage" in allowed:
            return "passthrough", "the server's garbage, streamed through"
        return "violation", "garbage outside a garbage phase"
    if want_id is None:  # a notification
        if a.status == 202:
            return "ok", ""
        if a.status == 404 and is_session_not_found(a):
            return "degraded", "404 session not found"
        if a.status == 503 and a.header("retry-after"):
            try:
                msg = json.loads(a.body)
            except ValueError:
                return "violation", f"503 without a JSON body: {a.body[:120]!r}"
            if isinstance(msg, dict) and is_error_object(msg.get("error")) and msg.get("id") is None:
                return "degraded", "503 for a notification"
        return "violation", f"notification answered {a.status}: {a.body[:160]!r}"
    if not a.body:
        return "violation", f"empty body with status {a.status}"
    try:
        messages = [m for m in a.messages() if not (isinstance(m, dict) and "method" in m)]
    except (ValueError, UnicodeDecodeError) as e:
        return "violation", f"unparseable {a.status} body ({e}): {a.body[:160]!r}"
    if a.status == 404:
        # The server's own "session not found": agents open a new session.
        if is_session_not_found(a):
            return "degraded", "404 session not found"
        return "violation", f"404 without a JSON-RPC error: {a.body[:160]!r}"
    if a.status != 200:
        return "violation", f"status {a.status} for a request with an id: {a.body[:160]!r}"
    if len(messages) != 1:
        return "violation", f"{len(messages)} answers in one body: {a.body[:160]!r}"
    return judge_message(messages[0], want_id, op)


def judge_cut(exc: BaseException, allowed: frozenset[str]) -> tuple[str, str]:
    """An answer that broke off: explained only where the phase cuts answers after their headers."""
    detail = f"{type(exc).__name__}: {exc}"[:200]
    if "cut" in allowed:
        return "passthrough", f"answer cut mid-stream ({detail})"
    return "violation", f"connection broke: {detail}"


# ------------------------------------------------------------------------------------------------
# Agents


class Agent(threading.Thread):
    """One agent: sends requests until told to stop, each judged and recorded."""

    def __init__(self, name: str, url: str, rec: Recorder, deadline: float, stop: threading.Event, seed: int,
                 pause: float) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.rec, self.deadline, self.stop_event = url, rec, deadline, stop
        self.rng = random.Random(seed)
        self.pause = pause
        self.ids = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.name}-{next(self.ids)}"

    def record(self, phase: str, op: str, started: float, kind: str, detail: str) -> Outcome:
        latency = time.monotonic() - started
        if latency > self.deadline:
            kind, detail = "violation", f"answered after {latency:.1f} s, past the {self.deadline:.0f} s deadline ({detail})"
        out = Outcome(phase, self.name, op, kind, latency, detail)
        self.rec.end(self.name, out)
        return out

    def pick(self, ops: list[tuple[str, int]]) -> str:
        return self.rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]

    def nap(self) -> None:
        self.stop_event.wait(self.rng.uniform(0.5, 1.5) * self.pause)


TOOL_ARGS = {"echo": {"text": "chaos"}, "add": {"a": 2, "b": 3}, "increment": {}, "whoami": {}}


class RawAgent(Agent):
    """Plain JSON-RPC over HTTP (like tests/mcp_http.py). `session`: the handshake-era wire on the
    stateful SSE server with a session; otherwise per-request `Mcp-Method` headers on the
    stateless JSON server."""

    OPS = [("tools/list", 2), ("tools/call echo", 4), ("tools/call add", 1), ("tools/call whoami", 1),
           ("tools/call increment", 2), ("ping", 1), ("notification", 1)]

    def __init__(self, *a, session: bool, **kw) -> None:
        super().__init__(*a, **kw)
        self.session_mode = session
        self.sid: str | None = None

    def send(self, op: str, body: dict, headers: dict) -> Answer | None:
        phase, allowed, started = self.rec.begin(self.name, op)
        want_id = body.get("id")
        try:
            a = request(self.url, body=body, headers=headers, host=None if self.session_mode else JSON_HOST,
                        timeout=self.deadline)
        except (TimeoutError, socket.timeout) as e:
            self.record(phase, op, started, "violation", f"no answer within the deadline ({e})")
            return None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            # A fault switched on while the request was under way explains it too.
            kind, detail = judge_cut(e, allowed | self.rec.allowed_now())
            self.record(phase, op, started, kind, detail)
            return None
        kind, detail = judge_answer(a, want_id, op, allowed | self.rec.allowed_now())
        self.record(phase, op, started, kind, detail)
        return a

    def headers(self, method: str, name: str | None = None) -> dict:
        h = {"MCP-Protocol-Version": "2025-11-25"}
        if self.session_mode:
            if self.sid:
                h["Mcp-Session-Id"] = self.sid
        else:
            h["Mcp-Method"] = method
            if name:
                h["Mcp-Name"] = name
        return h

    def open_session(self) -> None:
        body = {"jsonrpc": "2.0", "id": self.next_id(), "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": f"chaos-{self.name}", "version": "0"}}}
        a = self.send("initialize", body, {"MCP-Protocol-Version": "2025-11-25"})
        sid = a.header("mcp-session-id") if a is not None and a.status == 200 else None
        if sid:
            self.sid = sid
            self.send("notification", {"jsonrpc": "2.0", "method": "notifications/initialized"}, self.headers(""))

    def run(self) -> None:
        while not self.stop_event.is_set():
            if self.session_mode and not self.sid:
                self.open_session()
                self.nap()
                continue
            op = self.pick(self.OPS)
            if op == "notification":
                method = "notifications/cancelled"
                body = {"jsonrpc": "2.0", "method": method, "params": {"requestId": "gone", "reason": "chaos"}}
                a = self.send(op, body, self.headers(method))
                if a is not None and a.status == 404:
                    self.sid = None
            elif op.startswith("tools/call"):
                tool = op.split()[1]
                body = {"jsonrpc": "2.0", "id": self.next_id(), "method": "tools/call",
                        "params": {"name": tool, "arguments": TOOL_ARGS[tool]}}
                a = self.send(op, body, self.headers("tools/call", tool))
                if a is not None and a.status == 404:
                    self.sid = None  # the server forgot the session: open a new one
            else:
                body = {"jsonrpc": "2.0", "id": self.next_id(), "method": op, "params": {}}
                a = self.send(op, body, self.headers(op))
                if a is not None and a.status == 404:
                    self.sid = None
            self.nap()


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or `e` itself."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


def judge_sdk_exception(e: BaseException, allowed: frozenset[str]) -> tuple[str, str]:
    """An SDK client call that raised: `MCPError` carries a well-formed JSON-RPC error; a broken
    stream is explained only where the phase cuts answers; anything else is a violation."""
    import httpx2 as httpx  # the SDK's HTTP client
    from mcp import MCPError

    found = leaves(e)
    described = "; ".join(f"{type(x).__name__}: {x}" for x in found)[:240]
    if all(isinstance(x, MCPError) and isinstance(x.code, int) and isinstance(x.message, str) and x.message
           for x in found):
        return "degraded", f"MCPError {found[0].code}"
    if "cut" in allowed and all(isinstance(x, (httpx.TransportError, ConnectionError)) for x in found):
        return "passthrough", f"stream cut mid-answer ({described})"
    return "violation", f"SDK raised {described}"


class SdkAgent(Agent):
    """The official MCP Python SDK client (`mcp.Client`), `mode` "auto" (2026-07-28, no
    session) or "legacy" (2025-11-25 with a session), reconnecting after an exception."""

    OPS = [("tools/list", 2), ("tools/call echo", 4), ("tools/call add", 1), ("tools/call increment", 2)]

    def __init__(self, *a, mode: str, **kw) -> None:
        super().__init__(*a, **kw)
        self.mode = mode
        # `ping` is gone from protocol 2026-07-28: only the legacy session pings.
        self.ops = self.OPS + [("ping", 1)] if mode == "legacy" else self.OPS

    def run(self) -> None:
        asyncio.run(self.main())

    async def timed(self, op: str, make: Callable[[], Any]) -> Any:
        phase, allowed, started = self.rec.begin(self.name, op)
        try:
            result = await asyncio.wait_for(make(), self.deadline)
        except asyncio.TimeoutError:
            self.record(phase, op, started, "violation", "no answer within the deadline")
            raise
        except Exception as e:  # noqa: BLE001 - judged below
            kind, detail = judge_sdk_exception(e, allowed | self.rec.allowed_now())
            self.record(phase, op, started, kind, detail)
            raise
        kind, detail = "ok", ""
        if op.startswith("tools/call") and getattr(result, "is_error", False):
            texts = [getattr(c, "text", None) for c in result.content]
            kind, detail = ("degraded", "tool isError") if texts and all(texts) else ("violation", "tool error without text")
        self.record(phase, op, started, kind, detail)
        return result

    async def main(self) -> None:
        from mcp import Client
        while not self.stop_event.is_set():
            client = Client(self.url, mode=self.mode, read_timeout_seconds=self.deadline)
            try:
                await self.timed("connect", client.__aenter__)
            except Exception:  # noqa: BLE001 - recorded; try again
                await asyncio.sleep(self.pause)
                continue
            try:
                while not self.stop_event.is_set():
                    op = self.pick(self.ops)
                    if op == "tools/list":
                        await self.timed(op, lambda: client.list_tools(cache_mode="bypass"))
                    elif op == "ping":
                        await self.timed(op, client.send_ping)
                    else:
                        tool = op.split()[1]
                        await self.timed(op, lambda t=tool: client.call_tool(t, TOOL_ARGS[t]))
                    await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.pause)
            except Exception:  # noqa: BLE001 - recorded; reconnect
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.__aexit__(None, None, None), 5)


class Rater(threading.Thread):
    """Posts ratings of unique subjects straight to the aggregator and remembers which were
    acknowledged (2xx): all of those must survive its crashes. Its token exists only in this
    run's aggregator, so no other process that happens to take the port while the aggregator is
    down can acknowledge a rating."""

    def __init__(self, agg: Aggregator, token: str, rec: Recorder, stop: threading.Event, every: float,
                 run_id: str) -> None:
        super().__init__(name="rater", daemon=True)
        self.agg, self.token, self.rec, self.stop_event, self.every, self.run_id = agg, token, rec, stop, every, run_id
        self.acked: list[str] = []
        self.when: dict[str, str] = {}
        self.while_dead: list[str] = []
        self.attempted = 0

    def run(self) -> None:
        for i in itertools.count():
            if self.stop_event.wait(self.every):
                return
            subject = f"chaos-{self.run_id}-{i}"
            self.attempted += 1
            try:
                status, _, _ = self.agg.api("POST", "/v1/ratings", {"subject": {"kind": "server", "name": subject},
                                                                    "value": 0.9}, token=self.token)
            except OSError:
                continue  # not acknowledged: the aggregator is down
            if 200 <= status < 300:
                self.acked.append(subject)
                self.when[subject] = f"acknowledged during {self.rec.phase}"
                proc = self.agg.proc
                if proc is None or proc.poll() is not None:
                    self.while_dead.append(subject)  # cannot be ours: reported by the check


# ------------------------------------------------------------------------------------------------
# The system under test


@dataclass
class System:
    run_id: str = field(default_factory=lambda: f"{int(time.time() * 1000):x}")
    route_timeout_s: float = 3.0
    concurrency: int = 2
    servers: dict[str, FaultServer] = field(default_factory=dict)
    aggregator: Aggregator | None = None
    proxy: ChaosProxy | None = None
    envoy: Envoy | None = None
    reloads: int = 0

    @property
    def tokens(self) -> list[dict]:
        """The testbed's tokens plus a sidecar and a rater token of this run only."""
        return list(TESTBED_TOKENS) + [
            {"token": self.sidecar_token, "name": "chaos-sidecar", "role": "sidecar"},
            {"token": self.rater_token, "name": "chaos-rater", "role": "rater"},
        ]

    @property
    def sidecar_token(self) -> str:
        return f"chaos-sidecar-{self.run_id}-token"

    @property
    def rater_token(self) -> str:
        return f"chaos-rater-{self.run_id}-token"

    def plugin(self) -> dict:
        # Each reload changes a parameter that makes no difference to behaviour, so Envoy sees a
        # new filter configuration and builds a new filter chain.
        breaker = dict(BREAKER, backoff_reset_ms=BREAKER["backoff_reset_ms"] + self.reloads % 2)
        return with_upstream_timeout(
            {"servers": demo_servers(), "breaker": breaker,
             "trust": trust_plugin("chaos-sidecar", self.sidecar_token, poll_ms=500, report_ms=500,
                                   enforce_min_trust=False)},
            self.route_timeout_s)

    def start(self) -> "System":
        try:
            self.servers = spawn_demo_servers()
            self.aggregator = Aggregator(config=AGGREGATOR_CONFIG, tokens=self.tokens).start()
            self.proxy = ChaosProxy(target_port=self.aggregator.port).start()
            clusters = {n: ("127.0.0.1", s.port) for n, s in self.servers.items()}
            clusters[AGGREGATOR_CLUSTER] = ("127.0.0.1", self.proxy.port)
            cfg = bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=clusters, plugin=self.plugin(),
                            route_timeout_s=self.route_timeout_s)
            self.envoy = Envoy(cfg, concurrency=self.concurrency, dynamic_listener=True).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.envoy:
            self.envoy.stop()
        if self.proxy:
            self.proxy.stop()
        if self.aggregator:
            self.aggregator.stop()
        for s in self.servers.values():
            s.stop()

    # Faults -------------------------------------------------------------------------------------

    def fault(self, names: tuple[str, ...], mode: str, **params: Any) -> None:
        for n in names:
            self.servers[n].fault(mode, **params)

    def aggregator_kill(self) -> None:
        assert self.aggregator
        self.aggregator.kill()

    def aggregator_up(self) -> None:
        agg = self.aggregator
        assert agg
        if agg.proc is None or agg.proc.poll() is not None:
            agg.proc = None
            agg.start()
            # start() waits for /healthz on the port: make sure it is our process that answers.
            time.sleep(0.1)
            if agg.proc.poll() is not None:
                raise RuntimeError(f"the aggregator could not start again on port {agg.port} (taken?)")

    def reload(self) -> None:
        assert self.envoy
        self.reloads += 1
        self.envoy.reload_listener(self.plugin())

    def breaker_states(self) -> dict[str, int]:
        assert self.envoy
        stats = self.envoy.stats("breaker.state")
        return {c: stats.get(f"{STAT}{c}.breaker.state", 0) for c in CLUSTERS}


# ------------------------------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    name: str
    fault: str  # what is injected, for the table
    seconds: float
    begin: Callable[[System], None] = lambda s: None
    end: Callable[[System], None] = lambda s: None
    tick: Callable[[System, int], None] | None = None  # called every `every` seconds with a counter
    every: float = 1.0
    allowed: frozenset[str] = frozenset()  # passthrough kinds this phase explains


# A server that crashes or is cut off after its answer's headers left cuts the answer: the sidecar
# already forwarded those headers (it does not hold answers back), so the agent sees the stream
# break as it would without the sidecar.
CRASH = frozenset({"cut"})


def flap(s: System, n: int) -> None:
    s.fault(PRIMARIES, "down" if n % 2 == 0 else "healthy")


def resets(s: System, n: int) -> None:
    s.fault(PRIMARIES, "reset", at=("request", "headers", "body")[n % 3])


def storm(s: System, n: int) -> None:
    s.fault(PRIMARIES, "http_5xx", status=(503, 500, 502)[n % 3])


def restart_aggregator(s: System, n: int) -> None:
    if n % 2 == 0:
        s.aggregator_kill()
    else:
        s.aggregator_up()


def everything(s: System, n: int) -> None:
    flap(s, n)
    restart_aggregator(s, n)
    if n % 2 == 1:
        s.reload()


def phases(scale: float) -> list[Phase]:
    """The schedule; `scale` stretches every phase (1.0 is the full run)."""
    def d(full: float) -> float:
        return max(2.0, full * scale)

    healthy = lambda s: s.fault(PRIMARIES + FALLBACKS, "healthy")  # noqa: E731
    return [
        Phase("baseline", "none", d(10)),
        Phase("5xx storm", "primaries answer 503/500/502", d(15), tick=storm, every=1.0, end=healthy),
        Phase("flapping", "primaries down/up every 1 s", d(20), tick=flap, every=1.0, end=healthy, allowed=CRASH),
        Phase("slow-loris", "primaries dribble 16 B/s after the headers", d(15),
              begin=lambda s: s.fault(PRIMARIES, "slowloris", interval_ms=1000, chunk_bytes=16), end=healthy,
              allowed=CRASH),
        Phase("resets", "primaries RST before/after headers, mid-body", d(15), tick=resets, every=1.5, end=healthy,
              allowed=CRASH),
        Phase("garbage", "primaries answer 200 + non-JSON", d(10), begin=lambda s: s.fault(PRIMARIES, "garbage"),
              end=healthy, allowed=frozenset({"garbage"})),
        Phase("nothing healthy", "primaries and fallbacks down", d(10),
              begin=lambda s: s.fault(PRIMARIES + FALLBACKS, "down"), end=healthy, allowed=CRASH),
        Phase("aggregator down", "aggregator SIGKILLed", d(10), begin=System.aggregator_kill, end=System.aggregator_up),
        Phase("aggregator slow", "proxy delays every chunk 1.5 s", d(10),
              begin=lambda s: s.proxy.set_mode("delay", delay_ms=1500), end=lambda s: s.proxy.set_mode("pass")),
        Phase("aggregator silent", "proxy swallows all bytes", d(10),
              begin=lambda s: s.proxy.set_mode("blackhole"), end=lambda s: s.proxy.set_mode("pass")),
        Phase("aggregator restarting", "SIGKILL / start every 2 s", d(16), tick=restart_aggregator, every=2.0,
              end=System.aggregator_up),
        Phase("envoy reload", "LDS push of a changed filter config every 2 s", d(16),
              tick=lambda s, n: s.reload(), every=2.0),
        Phase("everything", "flapping + aggregator restarts + reloads", d(20), tick=everything, every=1.0,
              end=lambda s: (healthy(s), s.aggregator_up()), allowed=CRASH),
    ]


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class Report:
    rows: list[dict]
    checks: list[tuple[str, bool, str]]
    violations: list[Outcome]
    totals: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and all(passed for _, passed, _ in self.checks)

    def table(self) -> str:
        head = ("| phase | fault injected | s | requests | ok | degraded (well-formed) | passthrough | violations "
                "| p50 ms | p99 ms | max s / deadline |")
        lines = [head, "|" + "---|" * 11]
        for r in self.rows:
            lines.append(f"| {r['phase']} | {r['fault']} | {r['seconds']:.0f} | {r['requests']} | {r['ok']} | "
                         f"{r['degraded']} | {r['passthrough']} | {r['violations']} | {r['p50']:.0f} | "
                         f"{r['p99']:.0f} | {r['max']:.1f} / {r['deadline']:.0f} |")
        lines.append("")
        lines.append("| check | result | detail |")
        lines.append("|---|---|---|")
        for name, passed, detail in self.checks:
            lines.append(f"| {name} | {'pass' if passed else 'FAIL'} | {detail} |")
        if self.violations:
            lines.append("")
            lines.append("Violations (first 20):")
            lines.append("")
            for v in self.violations[:20]:
                lines.append(f"- [{v.phase}] {v.agent} {v.op} after {v.latency:.2f} s: {v.detail}")
        return "\n".join(lines)


def summarize(rec: Recorder, schedule: list[tuple[Phase, float]], deadline: float) -> list[dict]:
    rows = []
    for phase, seconds in schedule:
        outs = [o for o in rec.outcomes if o.phase == phase.name]
        lat = sorted(o.latency for o in outs) or [0.0]
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
        rows.append({
            "phase": phase.name, "fault": phase.fault, "seconds": seconds, "requests": len(outs),
            **{k: sum(o.kind == k for o in outs) for k in ("ok", "degraded", "passthrough")},
            "violations": sum(o.kind == "violation" for o in outs),
            "p50": q[49] * 1000, "p99": q[98] * 1000, "max": lat[-1], "deadline": deadline,
        })
    return rows


def run(*, scale: float = 1.0, agents: int = 2, converge_s: float = 30.0, pause: float = 0.05,
        only: set[str] | None = None, log: Callable[[str], None] = print) -> Report:
    """Starts the system, runs the schedule under load, checks the invariants, stops everything."""
    system = System()
    rec = Recorder()
    deadline = system.route_timeout_s + RETRY_TIMEOUT_S + 2.0
    stop = threading.Event()
    t_start = time.monotonic()
    system.start()
    log(f"system up in {time.monotonic() - t_start:.1f} s: envoy {system.envoy.url}, "
        f"aggregator via proxy :{system.proxy.port}")
    threads: list[threading.Thread] = []
    schedule: list[tuple[Phase, float]] = []
    checks: list[tuple[str, bool, str]] = []
    rater = None
    trips: dict[str, int] = {}
    try:
        url = system.envoy.url
        for s in system.servers.values():
            s.reset_stats()
        request(url, body={"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}},
                headers={"Mcp-Method": "tools/list"}, host=JSON_HOST)  # the sidecar learns the tool hints
        seed = itertools.count(1)
        for i in range(agents):
            threads.append(RawAgent(f"raw-json-{i}", url, rec, deadline, stop, next(seed), pause, session=False))
            threads.append(RawAgent(f"raw-session-{i}", url, rec, deadline, stop, next(seed), pause, session=True))
            threads.append(SdkAgent(f"sdk-{i}", url, rec, deadline, stop, next(seed), pause, mode="auto"))
        threads.append(SdkAgent("sdk-legacy", url, rec, deadline, stop, next(seed), pause, mode="legacy"))
        rater = Rater(system.aggregator, system.rater_token, rec, stop, every=0.5, run_id=system.run_id)
        threads.append(rater)
        for t in threads:
            t.start()

        chosen = [p for p in phases(scale) if not only or p.name in only]
        for phase in chosen + [Phase("recovery", "none (breakers must close)", 0)]:
            with rec.lock:
                rec.phase, rec.allowed = phase.name, set(phase.allowed)
            t0 = time.monotonic()
            if phase.name == "recovery":
                # Traffic keeps flowing so that half-open breakers get their probes.
                try:
                    wait_until(lambda: not any(system.breaker_states().values()), converge_s, "every breaker closed",
                               interval=0.25)
                    took = time.monotonic() - t0
                    checks.append(("breakers converge", True, f"all {len(CLUSTERS)} closed {took:.1f} s after the faults stopped (bound {converge_s:.0f} s)"))
                except TimeoutError:
                    checks.append(("breakers converge", False, f"still not closed after {converge_s:.0f} s: {system.breaker_states()}"))
                stop.wait(max(2.0, 5.0 * scale))
                schedule.append((phase, time.monotonic() - t0))
                break
            log(f"phase {phase.name}: {phase.fault} ({phase.seconds:.0f} s)")
            phase.begin(system)
            n = 0
            while (left := phase.seconds - (time.monotonic() - t0)) > 0:
                if phase.tick:
                    phase.tick(system, n)
                    n += 1
                    time.sleep(min(phase.every, max(0.0, phase.seconds - (time.monotonic() - t0))))
                else:
                    time.sleep(min(left, 0.5))
            phase.end(system)
            schedule.append((phase, time.monotonic() - t0))
        stop.set()
        for t in threads:
            t.join(deadline + 5)
        with rec.lock:
            for agent, (started, phase_name, op) in rec.inflight.items():
                rec.outcomes.append(Outcome(phase_name, agent, op, "violation", time.monotonic() - started,
                                            "still waiting when the run ended"))
        checks += final_checks(system, rec, rater)
        opened = system.envoy.stats("breaker.opened")
        trips = {c: opened.get(f"{STAT}{c}.breaker.opened", 0) for c in CLUSTERS}
    finally:
        stop.set()
        system.stop()
    rows = summarize(rec, schedule, deadline)
    totals = {"requests": len(rec.outcomes), "seconds": time.monotonic() - t_start,
              "faults": sum(1 for p, _ in schedule if p.fault not in ("none", "none (breakers must close)")),
              "reloads": system.reloads, "breaker_trips": trips}
    violations = [o for o in rec.outcomes if o.kind == "violation"]
    return Report(rows, checks, violations, totals, rec.outcomes)


def read_politely(agg: Aggregator, path: str, patience: float = 30.0):
    """GET as the reader, waiting out the aggregator's rate limit (429) instead of failing on it."""
    deadline = time.monotonic() + patience
    while True:
        status, headers, doc = agg.api("GET", path, token="reader-token-testbed")
        if status != 429 or time.monotonic() > deadline:
            return status, headers, doc
        time.sleep(0.25)


def final_checks(system: System, rec: Recorder, rater: Rater | None) -> list[tuple[str, bool, str]]:
    envoy = system.envoy
    checks = []
    log_text = envoy.log_text()
    panics = [line for line in log_text.splitlines() if PANIC.search(line)]
    reloads = envoy.stats("wasm.mcp_warden").get("wasm.mcp_warden.vm_reload", 0)
    checks.append(("no wasm panic", not panics and reloads == 0,
                   f"{len(panics)} panic lines, {reloads} VM reloads" + (f"; first: {panics[0][:200]}" if panics else "")))

    executed = sum(s.stats().get("increment_calls", 0) for s in system.servers.values())
    checks.append(("unsafe calls never repeated", executed <= rec.unsafe_sent,
                   f"`increment` sent {rec.unsafe_sent} times, executed {executed} times"))

    system.aggregator_up()
    agg = system.aggregator
    if rater is not None:
        lost = []
        for name in rater.acked:
            status, _, doc = read_politely(agg, f"/v1/servers/{name}")
            if status != 200 or (doc or {}).get("ratings", {}).get("count", 0) < 1:
                lost.append(f"{name} ({rater.when.get(name, '?')}; now {status} {str(doc)[:80]})")
        checks.append(("acknowledged ratings kept", not lost and not rater.while_dead,
                       f"{len(rater.acked)} of {rater.attempted} ratings acknowledged across the aggregator's "
                       f"crashes, {len(lost)} missing" + (f": {lost[:5]}" if lost else "")
                       + (f"; {len(rater.while_dead)} acknowledged while our aggregator was dead" if rater.while_dead else "")))

    # Reported outcomes: once the sidecar has flushed, the aggregator's lifetime success counts per
    # cluster equal the sidecar's own; more would be a batch counted twice.
    def compare() -> tuple[dict[str, int], dict[str, int]]:
        stats = envoy.stats("success")
        mine = {c: stats.get(f"{STAT}{c}.success", 0) for c in CLUSTERS}
        theirs = {}
        for c in CLUSTERS:
            status, _, doc = read_politely(agg, f"/v1/servers/{c}")
            theirs[c] = int((doc or {}).get("traffic", {}).get("success", 0)) if status == 200 else 0
        return mine, theirs

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: (lambda m, t: m == t)(*compare()), 15, "the last trust report", interval=0.5)
    mine, theirs = compare()
    double = {c: theirs[c] - mine[c] for c in CLUSTERS if theirs[c] > mine[c]}
    missing = {c: mine[c] - theirs[c] for c in CLUSTERS if theirs[c] < mine[c]}
    checks.append(("reported outcomes exactly once", not double and not missing,
                   f"sidecar successes {sum(mine.values())}, aggregator {sum(theirs.values())}"
                   + (f"; counted twice: {double}" if double else "") + (f"; never reported: {missing}" if missing else "")))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI form: phases of a few seconds")
    parser.add_argument("--scale", type=float, help="stretch every phase (full run: 1.0)")
    parser.add_argument("--agents", type=int, default=2, help="agents of each kind (plus one legacy SDK agent)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--phases", help="comma-separated phase names to run (default: all)")
    parser.add_argument("--dump", type=Path, help="write every request's outcome (JSON lines) to this file")
    args = parser.parse_args(argv)
    scale = args.scale or (0.25 if args.short else 1.0)
    report = run(scale=scale, agents=args.agents, only=set(args.phases.split(",")) if args.phases else None)
    if args.dump:
        args.dump.write_text("".join(json.dumps(o.__dict__) + "\n" for o in report.outcomes))
    table = report.table()
    print()
    print(table)
    print()
    t = report.totals
    summary = (f"{t['requests']} requests, {t['faults']} fault phases in {t['seconds']:.0f} s "
               f"({t['reloads']} listener reloads, breaker trips {t['breaker_trips']}): "
               f"{'PASS' if report.ok else 'FAIL'}")
    print(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(RESULTS_HEADER + table + "\n\n" + summary + "\n")
    return 0 if report.ok else 1


RESULTS_HEADER = """# Chaos run (`make chaos`)

Steady load from 7 agents (2 raw JSON-RPC on the stateless JSON server, 2 raw in sessions on the
SSE server, 2 official SDK clients on protocol 2026-07-28 and 1 in a legacy session) through one
sidecar (Envoy 1.40, 2 workers, route timeout 3 s), while faults are injected in phases. The
deadline of every request is the route timeout plus the filter's retry bound plus 2 s. Columns and
checks: `tests/chaos/chaos.py`. `degraded` answers are well-formed MCP failures; `passthrough`
answers are the faulty server's own bytes that the contract lets through (garbage inside a 200,
an answer cut after its headers), counted only in the phase that injects them.

"""


if __name__ == "__main__":
    sys.exit(main())
