"""Raw MCP-over-HTTP helpers for tests that need to see exact headers and bodies."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

ACCEPT = "application/json, text/event-stream"
LATEST = "2025-11-25"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def messages(self) -> list[dict]:
        """JSON-RPC messages of a JSON or SSE body."""
        ctype = (self.header("content-type") or "").split(";")[0].strip()
        if ctype == "text/event-stream":
            out, data = [], []
            for line in self.body.decode().replace("\r\n", "\n").split("\n"):
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line == "" and data:
                    text = "\n".join(data)
                    data = []
                    if text.strip():
                        out.append(json.loads(text))
            return out
        parsed = json.loads(self.body)
        return parsed if isinstance(parsed, list) else [parsed]

    def message(self) -> dict:
        msgs = [m for m in self.messages() if "method" not in m]
        assert len(msgs) == 1, f"expected one answer, got {msgs}"
        return msgs[0]


def request(url: str, method: str = "POST", body: bytes | dict | list | None = None, *,
            headers: dict | None = None, host: str | None = None, timeout: float = 10.0) -> Answer:
    """One HTTP exchange on a fresh connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = {"Accept": ACCEPT}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    if host:
        hdrs["Host"] = host
    hdrs.update(headers or {})
    raw = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    try:
        conn.request(method, u.path or "/", body=raw, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def rpc(url: str, method: str, params: dict | None = None, *, id: int | str | None = 1, session: str | None = None,
        host: str | None = None, headers: dict | None = None, version: str = LATEST, timeout: float = 10.0) -> Answer:
    msg: dict = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    hdrs = {"MCP-Protocol-Version": version}
    if session:
        hdrs["Mcp-Session-Id"] = session
    hdrs.update(headers or {})
    return request(url, body=msg, headers=hdrs, host=host, timeout=timeout)


def call_tool(url: str, name: str, arguments: dict | None = None, **kw) -> Answer:
    return rpc(url, "tools/call", {"name": name, "arguments": arguments or {}}, **kw)


def stateless_call(url: str, name: str, arguments: dict | None = None, *, id: int = 1, host: str = "json.mcp.local",
                   headers: dict | None = None, **kw) -> Answer:
    """A 2026-07-28 style request: `Mcp-Method`/`Mcp-Name` headers, no session."""
    headers = {"Mcp-Method": "tools/call", "Mcp-Name": name, **(headers or {})}
    return rpc(url, "tools/call", {"name": name, "arguments": arguments or {}}, id=id, host=host, headers=headers, **kw)


def initialize(url: str, version: str = LATEST, host: str | None = None) -> str:
    """Opens a session (handshake-era protocol) and returns its id."""
    a = rpc(url, "initialize", {"protocolVersion": version, "capabilities": {},
                                "clientInfo": {"name": "mcp-warden-tests", "version": "0"}}, host=host, version=version)
    assert a.status == 200, a
    sid = a.header("mcp-session-id")
    assert sid, a.headers
    n = rpc(url, "notifications/initialized", id=None, session=sid, host=host, version=version)
    assert n.status == 202, n
    return sid


def tool_text(answer: Answer) -> str:
    msg = answer.message()
    assert "result" in msg, msg
    return msg["result"]["content"][0]["text"]
