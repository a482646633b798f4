"""mcp-warden's conformance peer, built on the official MCP Python SDK.

A streamable-HTTP MCP server (``/mcp``) written for mcp-warden's testbed. It
uses ``mcp.server.mcpserver.MCPServer`` from the ``mcp`` package (2.x) and
offers the fixtures that the server scenarios of the official conformance
suite (``@modelcontextprotocol/conformance``, pinned in testbed/package.json)
ask for, so the suite can be run against a real SDK server directly and
through the sidecar:

* tools: plain text, image, audio, embedded resource, mixed content, an error
  result, log notifications, progress notifications, sampling and elicitation
  round trips back to the client, two elicitation forms exercising schema
  defaults and the enum variants, a tool whose input schema uses JSON Schema
  2020-12 keywords, and one that drops its SSE stream mid-call so the client
  has to resume it;
* resources: a text and a binary resource, a URI template, and a resource to
  subscribe to (``resources/subscribe`` / ``unsubscribe``);
* prompts: without arguments, with arguments, with an embedded resource and
  with an image; ``completion/complete`` for prompt and template arguments;
* ``logging/setLevel``, applied per session to the tool log notifications.

Only loopback Host headers (``127.0.0.1``, ``localhost``, ``[::1]``, any port)
and matching Origins are accepted; anything else is answered with a 4xx, which
is what the dns-rebinding scenario checks.

Usage: ``python py_everything_server.py --host 127.0.0.1 --port 8123``.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import math
import struct
import sys
import warnings
import wave
import zlib
from collections import OrderedDict
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, Image, MCPServer, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    AudioContent,
    CallToolResult,
    ClientCapabilities,
    Completion,
    CompletionArgument,
    CompletionContext,
    ElicitationCapability,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceTemplateReference,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

SERVER_NAME = "mcp-warden-conformance-peer"
SERVER_VERSION = "1.0.0"
MCP_PATH = "/mcp"

# Logging, sampling and resources/subscribe are legacy-era (pre 2026-07-28)
# features in this SDK and warn on every use; exercising them is the point here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


# --------------------------------------------------------------------------- media fixtures


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def make_png(rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid 1x1 truecolour PNG of one pixel, built from scratch."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, depth 8, RGB, defaults
    scanline = b"\x00" + bytes(rgb)  # filter type 0, then the pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanline))
        + _png_chunk(b"IEND", b"")
    )


def make_wav(freq_hz: float = 440.0, duration_s: float = 0.05, rate: int = 8000) -> bytes:
    """A short mono 16-bit PCM sine tone as a WAV file."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq_hz * n / rate)))
        for n in range(int(rate * duration_s))
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buf.getvalue()


PNG_BYTES = make_png()
WAV_BYTES = make_wav()


def image_block() -> ImageContent:
    return Image(data=PNG_BYTES, format="png").to_image_content()


def audio_block() -> AudioContent:
    return AudioContent(type="audio", data=base64.b64encode(WAV_BYTES).decode(), mime_type="audio/wav")


def text_block(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def embedded_text(uri: str, text: str, mime_type: str = "text/plain") -> EmbeddedResource:
    return EmbeddedResource(type="resource", resource=TextResourceContents(uri=uri, mime_type=mime_type, text=text))


# --------------------------------------------------------------------------- per-session state

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class SessionBook:
    """What each MCP session asked for: its log threshold and its resource subscriptions.

    Sessions are told apart by their ``Mcp-Session-Id`` header; requests
    without one share the ``""`` entry.
    """

    def __init__(self) -> None:
        self.log_level: dict[str, str] = {}
        self.subscriptions: dict[str, set[str]] = {}

    @staticmethod
    def key_of(headers: Any) -> str:
        if headers is None:
            return ""
        return headers.get("mcp-session-id", "") or ""

    def wants_log(self, session: str, level: str) -> bool:
        threshold = self.log_level.get(session, "debug")
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)


def _request_headers(ctx: ServerRequestContext[Any, Any]) -> Any:
    return getattr(ctx.request, "headers", None)


# --------------------------------------------------------------------------- SSE resumption


class ReplayBuffer(EventStore):
    """In-memory event store: lets a client resume a dropped SSE stream with Last-Event-ID.

    Keeps the newest ``capacity`` events of all streams; event ids are a
    process-wide counter.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._ids = itertools.count(1)
        self._events: OrderedDict[str, tuple[str, JSONRPCMessage | None]] = OrderedDict()

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._capacity:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        known = self._events.get(last_event_id)
        if known is None:
            return None
        stream_id = known[0]
        snapshot = list(self._events.items())  # send_callback may await while new events arrive
        start = next(i for i, (event_id, _) in enumerate(snapshot) if event_id == last_event_id) + 1
        for event_id, (owner, message) in snapshot[start:]:
            if owner == stream_id and message is not None:  # priming events carry no message
                await send_callback(EventMessage(message, event_id))
        return stream_id


# --------------------------------------------------------------------------- tools

SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _client_has(ctx: Context, capability: ClientCapabilities) -> bool:
    return ctx.session.check_client_capability(capability)


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[text_block(text)], is_error=True)


def register_tools(server: MCPServer, book: SessionBook) -> None:
    @server.tool(name="test_simple_text", description="Answers with one fixed text block.")
    def simple_text() -> CallToolResult:
        return CallToolResult(content=[text_block("This is a simple text response for testing.")])

    @server.tool(name="test_image_content", description="Answers with a 1x1 PNG image block.")
    def image_content() -> CallToolResult:
        return CallToolResult(content=[image_block()])

    @server.tool(name="test_audio_content", description="Answers with a short WAV audio block.")
    def audio_content() -> CallToolResult:
        return CallToolResult(content=[audio_block()])

    @server.tool(name="test_embedded_resource", description="Answers with an embedded text resource.")
    def embedded_resource() -> CallToolResult:
        return CallToolResult(
            content=[embedded_text("test://embedded-resource", "This is an embedded resource content.")]
        )

    @server.tool(name="test_multiple_content_types", description="Answers with text, image and resource blocks.")
    def multiple_content_types() -> CallToolResult:
        payload = json.dumps({"test": "data", "value": 123})
        return CallToolResult(
            content=[
                text_block("Multiple content types test:"),
                image_block(),
                embedded_text("test://mixed-content-resource", payload, "application/json"),
            ]
        )

    @server.tool(name="test_error_handling", description="Always fails with an isError result.")
    def error_handling() -> CallToolResult:
        return _error("This tool intentionally returns an error for testing")

    @server.tool(name="test_tool_with_logging", description="Sends three info log notifications while running.")
    async def tool_with_logging(ctx: Context) -> CallToolResult:
        session = SessionBook.key_of(ctx.headers)
        steps = ("Tool execution started", "Tool processing data", "Tool execution completed")
        for i, step in enumerate(steps):
            if i:
                await anyio.sleep(0.05)
            if book.wants_log(session, "info"):
                await ctx.log("info", step, logger_name="conformance-peer")
        return CallToolResult(content=[text_block(f"Logged {len(steps)} steps.")])

    @server.tool(name="test_tool_with_progress", description="Reports progress 0, 50 and 100 of 100.")
    async def tool_with_progress(ctx: Context) -> CallToolResult:
        for i, done in enumerate((0, 50, 100)):
            if i:
                await anyio.sleep(0.05)
            await ctx.report_progress(done, 100, f"{done}% done")
        return CallToolResult(content=[text_block("Progress reported: 0, 50, 100 of 100.")])

    @server.tool(name="test_sampling", description="Asks the client's LLM to answer a prompt (sampling).")
    async def sampling(prompt: str, ctx: Context) -> CallToolResult:
        if not _client_has(ctx, ClientCapabilities(sampling=SamplingCapability())):
            return _error("The client did not declare the sampling capability.")
        reply = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=text_block(prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        answer = reply.content.text if isinstance(reply.content, TextContent) else reply.content.model_dump_json()
        return CallToolResult(content=[text_block(f"LLM response: {answer}")])

    async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> CallToolResult | tuple[str, Any]:
        if not _client_has(ctx, ClientCapabilities(elicitation=ElicitationCapability())):
            return _error("The client did not declare the elicitation capability.")
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return result.action, result.content

    @server.tool(name="test_elicitation", description="Asks the user for a username and an e-mail address.")
    async def elicitation(message: str, ctx: Context) -> CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        outcome = await elicit(ctx, message, schema)
        if isinstance(outcome, CallToolResult):
            return outcome
        action, content = outcome
        return CallToolResult(content=[text_block(f"User response: action={action}, content={json.dumps(content)}")])

    @server.tool(
        name="test_elicitation_sep1034_defaults",
        description="Elicits a form whose fields all carry default values (SEP-1034).",
    )
    async def elicitation_defaults(ctx: Context) -> CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Full name", "default": "John Doe"},
                "age": {"type": "integer", "description": "Age in years", "default": 30},
                "score": {"type": "number", "description": "Score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "Account status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verified account", "default": True},
            },
        }
        outcome = await elicit(ctx, "Confirm or change the pre-filled values.", schema)
        if isinstance(outcome, CallToolResult):
            return outcome
        action, content = outcome
        text = f"Elicitation completed: action={action}, content={json.dumps(content)}"
        return CallToolResult(content=[text_block(text)])

    @server.tool(
        name="test_elicitation_sep1330_enums",
        description="Elicits a form with every enum flavour: titled or not, single or multi select (SEP-1330).",
    )
    async def elicitation_enums(ctx: Context) -> CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
        }
        outcome = await elicit(ctx, "Pick from each list.", schema)
        if isinstance(outcome, CallToolResult):
            return outcome
        action, content = outcome
        text = f"Elicitation completed: action={action}, content={json.dumps(content)}"
        return CallToolResult(content=[text_block(text)])

    @server.tool(
        name="test_reconnection",
        description="Closes its SSE stream mid-call, then answers; the client gets the answer by resuming.",
    )
    async def reconnection(ctx: Context) -> CallToolResult:
        # A no-op unless the client negotiated 2025-11-25+ (then the stream was primed and is resumable).
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
        return CallToolResult(content=[text_block("Answered after the stream was closed.")])


def schema_2020_12_tool() -> Tool:
    """A tool whose advertised input schema uses 2020-12 keywords: ``$schema``, ``$defs``/``$ref``."""

    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> CallToolResult:
        return CallToolResult(content=[text_block(f"Received name={name!r}, address={json.dumps(address)}")])

    tool = Tool.from_function(json_schema_2020_12_tool, description="Tool with JSON Schema 2020-12 features")
    schema = {
        "$schema": SCHEMA_2020_12,
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }
    return tool.model_copy(update={"parameters": schema})


# --------------------------------------------------------------------------- resources

WATCHED_URI = "test://watched-resource"


def register_resources(server: MCPServer) -> None:
    @server.resource(
        "test://static-text",
        name="static-text",
        description="A fixed text resource.",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        name="static-binary",
        description="A fixed binary resource: a 1x1 PNG.",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return PNG_BYTES

    @server.resource(
        WATCHED_URI,
        name="watched-resource",
        description="A resource clients may subscribe to.",
        mime_type="text/plain",
    )
    def watched() -> str:
        return "Subscribe to this resource to hear about updates."

    @server.resource(
        "test://template/{id}/data",
        name="template-data",
        description="Data for the id in the URI.",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:  # noqa: A002 - the name comes from the URI template
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --------------------------------------------------------------------------- prompts and completion

COMPLETIONS: dict[tuple[str, str], list[str]] = {
    ("test_prompt_with_arguments", "arg1"): ["test", "testing", "tested", "paris", "park"],
    ("test_prompt_with_arguments", "arg2"): ["world", "warden", "wasm"],
    ("test://template/{id}/data", "id"): ["1", "123", "42"],
}


def register_prompts(server: MCPServer) -> None:
    @server.prompt(name="test_simple_prompt", description="A prompt without arguments.")
    def simple_prompt() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(name="test_prompt_with_arguments", description="A prompt that quotes its two arguments.")
    def prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds the resource named by resourceUri.",
    )
    def prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 - wire name
        return [
            UserMessage(embedded_text(resourceUri, "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(name="test_prompt_with_image", description="A prompt that carries an image.")
    def prompt_with_image() -> list[UserMessage]:
        return [UserMessage(image_block()), UserMessage("Please analyze the image above.")]

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        target = ref.name if isinstance(ref, PromptReference) else ref.uri
        candidates = COMPLETIONS.get((target, argument.name), [])
        matches = [c for c in candidates if c.startswith(argument.value)]
        return Completion(values=matches, total=len(matches), has_more=False)


# --------------------------------------------------------------------------- legacy-era methods


def register_session_methods(server: MCPServer, book: SessionBook) -> None:
    """``logging/setLevel`` and ``resources/subscribe`` / ``unsubscribe``.

    ``MCPServer`` has no decorator for these (the 2026-07-28 revision drops
    them), and extensions may not bind spec methods; the SDK's advice is the
    low-level ``Server.add_request_handler``, reached through the server's
    low-level instance.
    """
    lowlevel = server._lowlevel_server  # noqa: SLF001 - no public accessor in mcp 2.3

    async def set_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        book.log_level[SessionBook.key_of(_request_headers(ctx))] = params.level
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        book.subscriptions.setdefault(SessionBook.key_of(_request_headers(ctx)), set()).add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        book.subscriptions.get(SessionBook.key_of(_request_headers(ctx)), set()).discard(str(params.uri))
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


# --------------------------------------------------------------------------- assembly


def build_server() -> MCPServer:
    book = SessionBook()
    server = MCPServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions="Conformance test peer of the mcp-warden testbed.",
        tools=[schema_2020_12_tool()],
        log_level="WARNING",
    )
    register_tools(server, book)
    register_resources(server)
    register_prompts(server)
    register_session_methods(server, book)
    return server


def loopback_only() -> TransportSecuritySettings:
    """Host/Origin allow-list: the loopback names, with or without a port."""
    names = ("127.0.0.1", "localhost", "[::1]")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[h for n in names for h in (n, f"{n}:*")],
        allowed_origins=[o for n in names for o in (f"http://{n}", f"http://{n}:*")],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3001, help="port to bind (default 3001)")
    args = parser.parse_args(argv)

    build_server().run(
        "streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path=MCP_PATH,
        event_store=ReplayBuffer(),
        retry_interval=500,
        transport_security=loopback_only(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
