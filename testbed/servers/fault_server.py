#!/usr/bin/env python3
"""A real MCP server (official Python SDK 2.x) with a runtime fault switch.

mcp-warden's integration tests, demo and benchmarks need an upstream MCP
server that behaves like a genuine one when healthy and that can be made to
misbehave on demand, in every way the Envoy filter has to cope with. This
process serves two ports:

* the MCP port (``--port``, path ``/mcp``): an ``MCPServer`` from the SDK behind
  the streamable-HTTP transport, so both the handshake-era wire (``initialize``,
  sessions) and the 2026-07-28 per-request wire (``server/discover``,
  ``Mcp-Method`` headers) are served by the SDK itself;
* the control port (``--control-port``): a small JSON API that switches faults
  and reads request counters (see ``testbed/servers/README.md``).

Faults are injected by an ASGI middleware in front of the SDK app, on the MCP
path only. The ``down`` fault stops the MCP listener altogether (connections
are refused, as for a crashed server) and any other fault brings up a fresh
server on the same port, with fresh session state, like a restarted process.

Run ``python fault_server.py --help`` for the CLI. Once both ports listen, one
line ``READY mcp=http://HOST:PORT/mcp control=http://HOST:CPORT`` is printed
to stdout; SIGTERM or SIGINT stops the process cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import struct
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, MCP_METHOD_HEADER, MCP_PROTOCOL_VERSION_HEADER
from mcp_types import ToolAnnotations
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("fault_server")

MCP_PATH = "/mcp"
BIG_MAX_BYTES = 10 * 1024 * 1024
SLOW_MAX_MS = 10 * 60 * 1000
MAX_FAULT_DELAY_MS = 10 * 60 * 1000
# Bodies beyond the SDK's own request limit (4 MiB) are answered 413 by the SDK;
# there is no point parsing them for the counters.
MAX_PARSED_BODY = 4 * 1024 * 1024
# Backstop only: a stopping listener cancels its requests itself (see
# _Uvicorn.shutdown); this bounds the wait for them to unwind.
STOP_GRACE_SECONDS = 2

# Set as a raw header (not `media_type`) because Starlette appends
# "; charset=utf-8" to text/* media types and the SDK's own streams carry none.
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache, no-transform"}

FAULT_MODES = (
    "healthy", "slow", "http_5xx", "jsonrpc_error", "garbage", "wrong_id", "down", "slowloris", "reset",
)
# Where a `reset` fault aborts the connection: before the SDK sees the request, right after the
# response headers, or after part of the first body chunk.
RESET_POINTS = ("request", "headers", "body")
# Gives the partial answer time to leave before the RST (a RST may discard unread data).
RESET_FLUSH_SECONDS = 0.05


class FaultError(ValueError):
    """A POST /fault body that does not describe a valid fault (answered 400)."""


# --------------------------------------------------------------------------- state


@dataclass
class Stats:
    """Counters behind GET /stats; reset by POST /stats/reset."""

    requests: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    http_requests: int = 0
    increment_calls: int = 0

    def record(self, http_method: str, body: bytes, headers: Headers) -> None:
        """Count one HTTP request on the MCP path and the JSON-RPC messages it carries.

        Every message in a POST body counts once under its JSON-RPC method (a
        batch counts each element). When the body names no method (it is not
        JSON, or not JSON-RPC) the ``Mcp-Method`` header the 2026-07-28 wire
        sends is used instead, so such a request is still attributed. GET and
        DELETE carry no JSON-RPC message and only count as ``http_requests``.
        """
        self.http_requests += 1
        if http_method != "POST":
            return
        header_method = headers.get(MCP_METHOD_HEADER)
        messages = _decode_messages(body)
        if not messages:
            self.requests += 1
            self.by_method[header_method or "unknown"] += 1
            return
        for message in messages:
            self.requests += 1
            method = message.get("method") if isinstance(message, dict) else None
            if not isinstance(method, str):
                if isinstance(message, dict) and ("result" in message or "error" in message):
                    method = "(response)"  # the client answering a server-initiated request
                else:
                    method = header_method or "unknown"
            self.by_method[method] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_method": dict(self.by_method),
            "http_requests": self.http_requests,
            "increment_calls": self.increment_calls,
        }


@dataclass
class ServerState:
    """Everything that outlives one MCP listener: survives a ``down``/up cycle."""

    name: str
    mode: str  # "sse" or "json": the transport flavour of the MCP port
    fault: dict[str, Any] = field(default_factory=lambda: {"mode": "healthy"})
    stats: Stats = field(default_factory=Stats)
    # The increment() tool's counter is per process: a down/up cycle of the
    # listener does not reset it (only the process exiting does).
    counter: int = 0
    # The MCP listener's open connections (set by serve()): `reset` and
    # `slowloris` find the request's own TCP connection among them.
    connections: Callable[[], list[Any]] = list

    def connection_of(self, scope: Scope) -> Any | None:
        """uvicorn's protocol object (it holds the transport) that carries this request."""
        client = scope.get("client")
        if not client:
            return None
        for conn in self.connections():
            if conn.client is not None and tuple(conn.client) == tuple(client):
                return conn
        return None


# --------------------------------------------------------------------------- MCP server


def build_mcp_app(state: ServerState, host: str, allowed_hosts: list[str]) -> ASGIApp:
    """Build a fresh MCPServer and its streamable-HTTP app, wrapped in the fault middleware.

    A fresh server is built for every start of the listener because the SDK's
    StreamableHTTPSessionManager can only be run once per instance.
    """
    mcp = MCPServer(
        name=state.name,
        version="1.0.0",
        instructions=f"mcp-warden fault-injection test server {state.name!r}",
        log_level=logging.getLevelName(logging.getLogger().level),  # type: ignore[arg-type]
    )
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

    @mcp.tool(annotations=read_only)
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool(annotations=read_only)
    def whoami() -> str:
        """Return the name of the server that served this call."""
        return state.name

    @mcp.tool(annotations=read_only)
    def fail_tool(message: str) -> str:
        """Always fail: the call result has isError true and the message as its text."""
        # ToolError is the SDK's "anticipated failure": it becomes a tool result
        # with isError true (not a JSON-RPC error) and is logged without a traceback.
        raise ToolError(message)

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
        )
    )
    def increment() -> int:
        """Add one to this process's counter and return the new value (not idempotent)."""
        state.counter += 1
        state.stats.increment_calls += 1
        return state.counter

    # structured_output=False: the answer is exactly one text block of `size`
    # bytes; a structured copy would double the payload.
    @mcp.tool(annotations=read_only, structured_output=False)
    def big(size: int) -> str:
        """Return a text of exactly `size` bytes (at most 10 MiB)."""
        if not 0 <= size <= BIG_MAX_BYTES:
            raise ToolError(f"size must be between 0 and {BIG_MAX_BYTES} bytes, got {size}")
        return "x" * size

    @mcp.tool(annotations=read_only)
    async def slow(ms: int) -> str:
        """Sleep `ms` milliseconds (at most 10 minutes), then answer."""
        if not 0 <= ms <= SLOW_MAX_MS:
            raise ToolError(f"ms must be between 0 and {SLOW_MAX_MS}, got {ms}")
        await anyio.sleep(ms / 1000)
        return f"{state.name} slept {ms} ms"

    @mcp.resource("info://server", name="server-info", mime_type="application/json")
    def server_info() -> str:
        """Which test server this is and how its MCP port is configured."""
        return json.dumps({"name": state.name, "mode": state.mode})

    @mcp.prompt()
    def greet(who: str) -> str:
        """A one-line greeting prompt."""
        return f"Say hello to {who} from {state.name}."

    return FaultMiddleware(streamable_app(mcp, host, allowed_hosts, json_mode=state.mode == "json"), state)


def streamable_app(mcp: MCPServer, host: str, allowed_hosts: list[str], json_mode: bool) -> ASGIApp:
    """The SDK's Streamable HTTP app at /mcp: stateless with JSON answers in json mode, sessions
    with SSE answers otherwise.

    DNS-rebinding protection stays on, but must let through any loopback Host: agents reach this
    server through an Envoy sidecar listening on another port, and Envoy forwards the client's
    Host header unchanged. The SDK matches "host:*" as "that host with any port"; the bare names
    cover a Host header that carries no port at all."""
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    hosts = [*loopback, *(f"{h}:*" for h in loopback), *allowed_hosts]
    origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    return mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=json_mode,
        stateless_http=json_mode,
        transport_security=security,
        host=host,
    )


# --------------------------------------------------------------------------- fault middleware


def _decode_messages(body: bytes) -> list[Any]:
    """The JSON-RPC messages of a POST body (a batch gives several), or [] if it is not JSON."""
    if not body or len(body) > MAX_PARSED_BODY:
        return []
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if isinstance(decoded, list):
        return decoded
    return [decoded]


async def _buffer_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body and return it with a `receive` that replays it.

    The middleware needs the body (counters, request ids) before deciding
    whether the SDK sees the request at all; the replaying `receive` hands the
    SDK the same body and then the live channel, so it still learns of a
    client disconnect.
    """
    chunks: list[bytes] = []
    pending: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)  # e.g. http.disconnect: pass it on after the body
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending.insert(0, {"type": "http.request", "body": body, "more_body": False})

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return body, replay


class FaultMiddleware:
    """ASGI middleware that counts MCP traffic and applies the current fault.

    Only requests on the MCP path are touched. ``jsonrpc_error``, ``wrong_id``
    and ``garbage`` answer POSTs (the JSON-RPC carrying verb); GET and DELETE,
    which carry no JSON-RPC message, still reach the SDK in those modes.
    ``slowloris`` and ``reset`` wrap the SDK's own answer: the first dribbles
    its body, the second aborts the TCP connection part way.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH:
            await self.app(scope, receive, send)
            return

        body = b""
        if scope["method"] == "POST":
            body, receive = await _buffer_body(receive)
        headers = Headers(scope=scope)
        self.state.stats.record(scope["method"], body, headers)

        fault = dict(self.state.fault)  # snapshot: a switch mid-request must not mix modes
        mode = fault["mode"]
        if mode == "reset":
            await self._reset(fault["at"], scope, receive, send)
            return
        if mode == "slowloris":
            await self.app(scope, receive, self._dribbling(fault, scope, send))
            return
        if mode == "slow":
            await anyio.sleep(fault["delay_ms"] / 1000)
        elif mode == "http_5xx":
            status = fault["status"]
            text = f"injected fault: HTTP {status} from {self.state.name}\n"
            await Response(text, status_code=status, media_type="text/plain")(scope, receive, send)
            return
        elif scope["method"] == "POST" and mode in ("jsonrpc_error", "wrong_id", "garbage"):
            if _fault_applies(fault, body) and await self._answer_post(mode, fault, body, headers, scope, receive, send):
                return
        await self.app(scope, receive, send)

    def _abort(self, scope: Scope) -> None:
        """Abort this request's TCP connection with a RST, like a crashing peer."""
        conn = self.state.connection_of(scope)
        transport = getattr(conn, "transport", None)
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger 0: close() sends RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _reset(self, at: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request (unless `at` is "request") and abort the connection at `at`."""
        if at == "request":
            self._abort(scope)
            return
        aborted = False

        async def cut(message: Message) -> None:
            nonlocal aborted
            if aborted:
                return  # swallow the rest of the SDK's answer
            if message["type"] == "http.response.start":
                await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunk = message.get("body", b"")
            if at == "body":
                if not chunk:
                    return
                await send({"type": "http.response.body", "body": chunk[: max(1, len(chunk) // 2)], "more_body": True})
            await anyio.sleep(RESET_FLUSH_SECONDS)
            aborted = True
            self._abort(scope)

        await self.app(scope, receive, cut)

    def _dribbling(self, fault: dict[str, Any], scope: Scope, send: Send) -> Send:
        """A `send` that passes headers at once and the body `chunk_bytes` at a time."""
        interval = fault["interval_ms"] / 1000
        size = fault["chunk_bytes"]

        async def dribble(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            for start in range(0, len(body), size):
                conn = self.state.connection_of(scope)
                transport = getattr(conn, "transport", None)
                if transport is None or transport.is_closing():
                    return  # the client went away: nothing left to dribble to
                last = start + size >= len(body)
                await send({"type": "http.response.body", "body": body[start : start + size],
                            "more_body": more or not last})
                if not last:
                    await anyio.sleep(interval)
            if not body:
                await send(message)

        return dribble

    async def _answer_post(
        self,
        mode: str,
        fault: dict[str, Any],
        body: bytes,
        headers: Headers,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Answer a POST under a body-level fault; False leaves it to the SDK."""
        if mode == "garbage":
            await self._send_garbage(scope, receive, send)
            return True

        messages = _decode_messages(body)
        if not messages:
            return False  # not JSON at all: the SDK's own parse-error answer is the realistic one
        requests = [m for m in messages if isinstance(m, dict) and "method" in m and "id" in m]
        if not requests:
            # Only notifications (or responses): accepted with no body, as the SDK does.
            await Response(status_code=202)(scope, receive, send)
            return True

        replies: list[dict[str, Any]] = []
        for request in requests:
            if mode == "jsonrpc_error":
                replies.append(
                    {
                        "jsonrpc": "2.0",
                        "id": request["id"],
                        "error": {"code": fault["code"], "message": fault["message"]},
                    }
                )
            else:  # wrong_id: a well-formed success, correlated with nothing the client sent
                replies.append(
                    {
                        "jsonrpc": "2.0",
                        "id": _other_id(request["id"]),
                        "result": {
                            "content": [{"type": "text", "text": f"injected fault: wrong id from {self.state.name}"}],
                            "isError": False,
                        },
                    }
                )
        is_batch = body.lstrip().startswith(b"[")
        await self._send_replies(replies, is_batch, headers, scope, receive, send)
        return True

    def _answers_with_sse(self, headers: Headers) -> bool:
        """Whether the SDK itself would answer this POST with an SSE stream.

        Only the handshake-era wire in ``sse`` mode does: its request POSTs get
        ``text/event-stream``. A 2026-07-28 request (its ``MCP-Protocol-Version``
        names no handshake-era revision) is a single exchange that the SDK
        answers as plain JSON unless the handler streams notifications or runs
        past its 15 s keepalive window, and ``json`` mode always answers JSON.
        """
        if self.state.mode != "sse":
            return False
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False
        accept = [part.split(";")[0].strip().lower() for part in headers.get("accept", "").split(",")]
        return any(t in ("text/event-stream", "text/*", "*/*") for t in accept)

    async def _send_replies(
        self,
        replies: list[dict[str, Any]],
        is_batch: bool,
        headers: Headers,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # Echo the session id so the answer looks like it came from the session
        # the client believes it is talking to.
        extra: dict[str, str] = {}
        if session_id := headers.get("mcp-session-id"):
            extra["mcp-session-id"] = session_id

        if self._answers_with_sse(headers):
            frames = "".join(
                f"event: message\r\ndata: {json.dumps(r, separators=(',', ':'))}\r\n\r\n" for r in replies
            )
            extra.update(_SSE_HEADERS)
            await Response(frames, headers=extra)(scope, receive, send)
            return

        status = 200
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if not is_batch and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # The 2026-07-28 wire maps some error codes to an HTTP status
            # (e.g. -32601 -> 404, -32602 -> 400); mirror the SDK's table.
            error = replies[0].get("error")
            if error is not None:
                status = ERROR_CODE_HTTP_STATUS.get(error["code"], 200)
        payload: Any = replies if is_batch else replies[0]
        text = json.dumps(payload, separators=(",", ":"))
        await Response(text, status_code=status, media_type="application/json", headers=extra)(scope, receive, send)

    async def _send_garbage(self, scope: Scope, receive: Receive, send: Send) -> None:
        """200 with the content type the mode promises and a body that is not JSON-RPC."""
        if self.state.mode == "sse":
            frames = "event: message\r\ndata: this is not json {{{ <garbage>\r\n\r\n"
            await Response(frames, headers=_SSE_HEADERS)(scope, receive, send)
        else:
            await Response("this is not json {{{ <garbage>", media_type="application/json")(scope, receive, send)


def _fault_applies(fault: dict[str, Any], body: bytes) -> bool:
    """A body-level fault limited to some JSON-RPC methods (`methods`) spares every other POST."""
    methods = fault.get("methods")
    if methods is None:
        return True
    return any(isinstance(m, dict) and m.get("method") in methods for m in _decode_messages(body))


def _other_id(request_id: Any) -> Any:
    """An id of the same JSON type as `request_id` that is certainly different from it."""
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return "wrong-id"
    if isinstance(request_id, int):
        return request_id + 1_000_000
    return f"{request_id}-wrong"


# --------------------------------------------------------------------------- fault validation


def _int_field(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        raise FaultError(f"field {key!r} is required for mode {body['mode']!r}")
    # bool is an int in Python; true/false is never a meaningful number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"field {key!r} must be an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise FaultError(f"field {key!r} must be between {low} and {high}, got {value}")
    return value


def parse_fault(body: Any) -> dict[str, Any]:
    """Validate a POST /fault body and return the normalised fault (defaults filled in)."""
    if not isinstance(body, dict):
        raise FaultError('body must be a JSON object like {"mode": "healthy"}')
    mode = body.get("mode")
    if not isinstance(mode, str):
        raise FaultError(f'field "mode" is required and must be one of {", ".join(FAULT_MODES)}')
    if mode not in FAULT_MODES:
        raise FaultError(f"unknown mode {mode!r}; expected one of {', '.join(FAULT_MODES)}")

    allowed: dict[str, tuple[str, ...]] = {
        "slow": ("delay_ms",),
        "http_5xx": ("status",),
        "jsonrpc_error": ("code", "message", "methods"),
        "wrong_id": ("methods",),
        "garbage": ("methods",),
        "slowloris": ("interval_ms", "chunk_bytes"),
        "reset": ("at",),
    }
    unknown = sorted(set(body) - {"mode", *allowed.get(mode, ())})
    if unknown:
        accepted = ", ".join(allowed.get(mode, ())) or "no other fields"
        raise FaultError(f"unknown field(s) {', '.join(unknown)} for mode {mode!r} (accepted: {accepted})")

    fault: dict[str, Any] = {"mode": mode}
    if "methods" in body:
        methods = body["methods"]
        if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
            raise FaultError(f'field "methods" must be a non-empty list of JSON-RPC method names, got {json.dumps(methods)}')
        fault["methods"] = methods
    if mode == "slow":
        fault["delay_ms"] = _int_field(body, "delay_ms", None, 0, MAX_FAULT_DELAY_MS)
    elif mode == "http_5xx":
        # 429 (rate limiting) rides on the same switch as the 5xx statuses.
        fault["status"] = _int_field(body, "status", 500, 429, 599)
        if 429 < fault["status"] < 500:
            raise FaultError(f"field 'status' must be 429 or between 500 and 599, got {fault['status']}")
    elif mode == "slowloris":
        fault["interval_ms"] = _int_field(body, "interval_ms", 1000, 1, MAX_FAULT_DELAY_MS)
        fault["chunk_bytes"] = _int_field(body, "chunk_bytes", 16, 1, 1024 * 1024)
    elif mode == "reset":
        at = body.get("at", "body")
        if at not in RESET_POINTS:
            raise FaultError(f"field 'at' must be one of {', '.join(RESET_POINTS)}, got {json.dumps(at)}")
        fault["at"] = at
    elif mode == "jsonrpc_error":
        fault["code"] = _int_field(body, "code", -32603, -(2**31), 2**31 - 1)
        message = body.get("message", "injected fault: JSON-RPC error")
        if not isinstance(message, str):
            raise FaultError(f'field "message" must be a string, got {json.dumps(message)}')
        fault["message"] = message
    return fault


# --------------------------------------------------------------------------- listeners


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that leaves signals to the process and can stop like a crash."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        # Two servers run in this process and each would install (and later
        # restore and re-raise) its own SIGINT/SIGTERM handlers; main() owns them.
        return contextlib.nullcontext()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop listening, then abort every open connection and cancel the
        # requests in progress instead of letting them and their SSE streams
        # finish: clients see what a crashed server gives them, the port is
        # refused at once, and a stop never waits on a slow tool call.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for task in list(self.server_state.tasks):
            task.cancel()
        await super().shutdown(sockets)


class _HideCancelledRequests(logging.Filter):
    """Drop uvicorn's traceback for a request that a listener stop cancelled on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so a busy port is an OSError, not uvicorn's sys.exit()."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """One uvicorn server on a fixed port that can be started and stopped repeatedly."""

    def __init__(self, name: str, host: str, port: int, build_app: Callable[[], ASGIApp]) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._build_app = build_app
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._server is not None and self._server.started and not self._server.should_exit

    def connections(self) -> list[Any]:
        """uvicorn's protocol objects of the open connections (empty while stopped)."""
        return list(self._server.server_state.connections) if self._server is not None else []

    async def start(self) -> None:
        if self._task is not None:
            return
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]  # resolves --port 0 once; restarts reuse it
        config = uvicorn.Config(
            self._build_app(),
            http="h11",
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
            # The request's client must be its TCP peer (`connection_of` finds the connection by
            # it): uvicorn would otherwise take it from an `X-Forwarded-For` that Envoy's HTTP
            # callouts add (port 0), and `slowloris`/`reset` would not find their connection.
            proxy_headers=False,
        )
        server = _Uvicorn(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self.name}-listener")
        while not server.started:
            if task.done():
                sock.close()
                task.result()  # surfaces the startup error
                raise RuntimeError(f"{self.name} listener exited during startup")
            await asyncio.sleep(0.01)
        self._server, self._task = server, task

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await task
        finally:
            self._server = self._task = None


# --------------------------------------------------------------------------- control API


async def json_body(request: Request) -> tuple[Any, Response | None]:
    """The request's JSON body, or the 400 answer for a body that is not JSON."""
    try:
        return json.loads(await request.body()), None
    except (ValueError, RecursionError):
        return None, JSONResponse({"error": "body must be JSON"}, status_code=400)


def control_app(state: Any, mcp_listener: Listener, switch_path: str, get_switch: Callable[[Request], Awaitable[Response]],
                set_switch: Callable[[Request], Awaitable[Response]]) -> Starlette:
    """A test server's control API: health, its switch (GET/POST `switch_path`), and the
    request stats of `state.stats` (reset to a fresh one of the same type)."""

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True, "mcp_up": mcp_listener.up})

    async def get_stats(_: Request) -> Response:
        return JSONResponse(state.stats.as_json())

    async def reset_stats(_: Request) -> Response:
        state.stats = type(state.stats)()
        return JSONResponse(state.stats.as_json())

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route(switch_path, get_switch, methods=["GET"]),
            Route(switch_path, set_switch, methods=["POST"]),
            Route("/stats", get_stats, methods=["GET"]),
            Route("/stats/reset", reset_stats, methods=["POST"]),
        ]
    )


def build_control_app(state: ServerState, mcp_listener: Listener) -> Starlette:
    switch_lock = asyncio.Lock()  # one fault switch at a time: down/up must not interleave

    async def get_fault(_: Request) -> Response:
        return JSONResponse(state.fault)

    async def set_fault(request: Request) -> Response:
        body, bad = await json_body(request)
        if bad is not None:
            return bad
        try:
            fault = parse_fault(body)
        except FaultError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        async with switch_lock:
            if fault["mode"] == "down":
                # Stop first, then record: while the port still listens the
                # previous fault keeps applying to whatever still arrives.
                await mcp_listener.stop()
                state.fault = fault
            else:
                state.fault = fault
                try:
                    await mcp_listener.start()  # no-op when already up
                except OSError as exc:
                    state.fault = {"mode": "down"}
                    message = f"could not listen on {mcp_listener.host}:{mcp_listener.port} again: {exc}"
                    return JSONResponse({"error": message}, status_code=500)
        logger.info("fault set to %s", fault)
        return JSONResponse(state.fault)

    return control_app(state, mcp_listener, "/fault", get_fault, set_fault)


# --------------------------------------------------------------------------- main


def arg_parser(description: str, name_help: str) -> argparse.ArgumentParser:
    """The command line every test server shares (`--mode` says what its transport is)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", required=True, help=name_help)
    parser.add_argument("--host", default="127.0.0.1", help="address both ports bind to (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="MCP port, path /mcp (0 picks a free port)")
    parser.add_argument("--control-port", type=int, required=True, help="control API port (0 picks a free port)")
    parser.add_argument(
        "--mode",
        choices=("sse", "json"),
        default="sse",
        help="sse: stateful sessions, SSE answers (SDK default); json: stateless, JSON answers",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT|:*]",
        help="extra Host header value to accept (repeatable); loopback hosts on any port are always accepted",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error"), help="stderr log level"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return arg_parser(
        "MCP test server with a runtime fault switch (mcp-warden testbed).",
        "server name: reported in serverInfo and by the whoami tool",
    ).parse_args(argv)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve_until_stopped(host: str, mcp_listener: Listener, control_listener: Listener) -> None:
    """Starts both listeners, prints the READY line the testbed waits for, and serves until
    SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await mcp_listener.start()
    try:
        await control_listener.start()
        shown = _url_host(host)
        print(
            f"READY mcp=http://{shown}:{mcp_listener.port}{MCP_PATH} control=http://{shown}:{control_listener.port}",
            flush=True,
        )
        await stop.wait()
    finally:
        await asyncio.gather(control_listener.stop(), mcp_listener.stop())


async def serve(args: argparse.Namespace) -> None:
    state = ServerState(name=args.name, mode=args.mode)
    mcp_listener = Listener(
        "mcp", args.host, args.port, lambda: build_mcp_app(state, args.host, list(args.allowed_host))
    )
    state.connections = mcp_listener.connections
    control_app_ = build_control_app(state, mcp_listener)
    control_listener = Listener("control", args.host, args.control_port, lambda: control_app_)
    await serve_until_stopped(args.host, mcp_listener, control_listener)


def run(prog: str, args: argparse.Namespace, serve_: Callable[[argparse.Namespace], Awaitable[None]]) -> int:
    """A test server's process: logging, the event loop, and exit 1 when a port cannot be bound."""
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("uvicorn.error").addFilter(_HideCancelledRequests())
    try:
        asyncio.run(serve_(args))
    except OSError as exc:  # e.g. a port already in use at startup
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("fault_server", parse_args(argv), serve)


if __name__ == "__main__":
    sys.exit(main())
