"""Security inspection end to end: a malicious MCP server (official SDK, `servers/malicious_server.py`)
behind a real Envoy with the filter, reporting to a real trust aggregator.

Each case checks what the agent receives (through the SDK client where it can take it, raw
JSON-RPC elsewhere), the filter's `security.*` stats, and what the aggregator recorded
(`GET /v1/servers/{cluster}`: `security_events`, the security component of the score, the state).
A fresh sidecar and aggregator per case (fresh pins, fresh scores); the servers live for the module
and are switched live.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from malicious import MaliciousServer
from mcp import Client, MCPError
from mcp_http import Answer, call_tool, initialize, rpc
from warden_testbed import (AGGREGATOR_BIN, AGGREGATOR_CLUSTER, WASM, Aggregator, Envoy, FaultServer, bootstrap, free_port,
                            trust_plugin, wait_until)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "servers"))
import malicious_server as evil  # noqa: E402

P = "wasmcustom.mcp_warden.cluster."
PRIMARY = "evil_primary"
CALC = "calc_primary"
CALC_HOST = "calc.mcp.local"
POLL_MS = 300
DEGRADED_CODE = -32050
# Penalty per severity in the trust model (docs/TRUST.md).
# The phrase rules alone, changed definitions recorded: what most tests here check.
RULES_ONLY = {"detector": {"enabled": False}, "rug_pull": {"default": "record"}}
# The built-in defaults (detector on, changed tools held until cleared).
DEFAULTS: dict = {}
PENALTY = {"low": 0.02, "medium": 0.1, "high": 0.5, "critical": 2.0}
BENIGN = [t["name"] for t in evil.BENIGN_TOOLS]

# What the built-in rules and the default policy make of each payload: the action, and rules
# that must be among the findings.
DEFAULT_OUTCOME = {
    "important_block": ("strip", {"poison/hidden-block", "poison/secret-file", "poison/secret-request"}),
    "zero_width": ("strip", {"poison/ignore-instructions", "unicode/zero-width"}),
    "tag_chars": ("quarantine", {"unicode/tag-characters"}),
    "bidi": ("strip", {"unicode/bidi-control"}),
    "exfil_url": ("strip", {"poison/exfil-url"}),
    "schema": ("strip", {"poison/ignore-instructions", "poison/secret-file"}),
    "long": ("record", {"poison/long-description"}),
}
SEVERITY = {"poison/hidden-block": "high", "poison/secret-file": "high", "poison/secret-request": "high",
            "poison/ignore-instructions": "high", "unicode/zero-width": "medium", "unicode/tag-characters": "critical",
            "unicode/bidi-control": "high", "poison/exfil-url": "high", "poison/long-description": "low",
            "pin/tool-changed": "medium", "shadow/cross-server-tool": "medium", "protocol/malformed": "low",
            "protocol/oversized-body": "low"}


# ------------------------------------------------------------------------------------------------
# The system


@pytest.fixture(scope="module")
def upstreams():
    """The malicious server in both transports, and an honest server (fault_server) to shadow."""
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm`")
    started = {
        "json": MaliciousServer("evil_json", mode="json").spawn(),
        "sse": MaliciousServer("evil_sse", mode="sse").spawn(),
        "calc": FaultServer(CALC, mode="json", allowed_hosts=[CALC_HOST, f"{CALC_HOST}:*"]).spawn(),
    }
    try:
        for s in started.values():
            s.wait_up()
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(autouse=True)
def benign_upstreams(upstreams):
    for name in ("json", "sse"):
        upstreams[name].set_mode("benign")
        upstreams[name].reset_stats()
    yield


@dataclass
class Rig:
    """One sidecar (Envoy with the filter) and its aggregator, in front of one malicious server."""

    envoy: Envoy
    agg: Aggregator
    server: MaliciousServer

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def sse(self) -> bool:
        return self.server.mode == "sse"

    def stat(self, name: str, cluster: str = PRIMARY) -> int:
        return self.envoy.stat(f"{P}{cluster}.security.{name}")

    def view(self, cluster: str = PRIMARY) -> dict:
        status, _, detail = self.agg.api("GET", f"/v1/servers/{cluster}", token="reader-token-testbed")
        return detail if status == 200 else {}

    def events(self, cluster: str = PRIMARY) -> list[dict]:
        return self.view(cluster).get("security_events", [])

    def wait_events(self, rules: set[str], cluster: str = PRIMARY, timeout: float = 10) -> list[dict]:
        """The cluster's security events once every rule in `rules` is among them."""
        def seen():
            events = self.events(cluster)
            return events if rules <= {e["rule"] for e in events} else None

        try:
            return wait_until(seen, timeout, f"security events {sorted(rules)} on {cluster}", interval=0.1)
        except TimeoutError as e:
            got = [(e_["rule"], e_["severity"], e_.get("tool")) for e_ in self.events(cluster)]
            raise AssertionError(f"{e}; the aggregator has {got}\n{self.envoy.log_tail(20)}") from None

    def list_raw(self, id: int | str = 1, session: str | None = None) -> Answer:
        """tools/list as raw JSON-RPC (a session is opened first on the SSE server)."""
        if self.sse and session is None:
            session = initialize(self.url)
        return rpc(self.url, "tools/list", {}, id=id, session=session, timeout=60)

    def list_sdk(self):
        """tools/list through the official SDK client: the `ListToolsResult`, or the MCPError."""
        # JSON server: the 2026-07-28 wire (server/discover, no session); SSE server: a
        # handshake-era session with SSE answers.
        mode = "legacy" if self.sse else "auto"

        async def run():
            async with Client(self.url, mode=mode, read_timeout_seconds=15, cache=None) as client:
                return await client.list_tools()

        try:
            return asyncio.run(run())
        except MCPError as e:
            return e
        except BaseExceptionGroup as group:  # the SDK's task groups wrap what the session raised
            inner = [e for e in _leaves(group) if isinstance(e, MCPError)]
            if inner:
                return inner[0]
            raise


def _leaves(group: BaseExceptionGroup):
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


@pytest.fixture
def warden(upstreams, warden_host):
    """Factory: a fresh aggregator and sidecar in front of the `json` or `sse` malicious server
    (logical server `tools`, path /mcp, cluster `evil_primary`); `inspection` is the plugin's
    `inspection` block (left out by default: inspection is on unless configured off);
    `shadow` also routes authority calc.mcp.local to the honest server (cluster `calc_primary`)."""
    started: list = []

    def make(transport: str = "json", inspection: dict | None = None, shadow: bool = False,
             agg_config: dict | None = None) -> Rig:
        server = upstreams[transport]
        agg = Aggregator(config=agg_config or {"trust": {"performance_half_life_ms": 60_000}}).start()
        started.append(agg)
        servers = [{"name": "tools", "match": {"path_prefix": "/mcp"}, "primary": PRIMARY}]
        if shadow:
            servers.insert(0, {"name": "calc", "match": {"authority": CALC_HOST}, "primary": CALC})
        plugin = {"servers": servers,
                  "trust": trust_plugin("sidecar-1", "sidecar-1-token-testbed", poll_ms=POLL_MS, report_ms=POLL_MS)}
        # These tests pin down the phrase rules and the record-only rug-pull policy; the detector
        # and the hold (the defaults) are tested with `inspection=DEFAULTS`.
        plugin["inspection"] = ({} if inspection is DEFAULTS else {**RULES_ONLY, **(inspection or {})})
        clusters = {PRIMARY: ("127.0.0.1", server.port), CALC: ("127.0.0.1", upstreams["calc"].port),
                    AGGREGATOR_CLUSTER: ("127.0.0.1", agg.port)}
        envoy = Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=clusters, plugin=plugin,
                                route_timeout_s=60, host=warden_host), concurrency=2)
        with_access_log(envoy)
        started.append(envoy)
        envoy.start()
        return Rig(envoy, agg, server)

    yield make
    for p in reversed(started):
        p.stop()


def with_access_log(envoy: Envoy) -> None:
    """An access log in the Envoy's workdir (`access.log`): how each exchange ended, for failures."""
    hcm = envoy.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    line = ("%REQ(:METHOD)% %RESPONSE_CODE% flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% "
            "termination=%CONNECTION_TERMINATION_DETAILS% sent=%BYTES_SENT% received=%BYTES_RECEIVED% "
            "upstream=%UPSTREAM_TRANSPORT_FAILURE_REASON% duration=%DURATION%\n")
    hcm["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(envoy.workdir / "access.log"),
            "log_format": {"text_format_source": {"inline_string": line}},
        },
    }]


def access_log(envoy: Envoy) -> str:
    try:
        return (envoy.workdir / "access.log").read_text(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# Helpers


def fingerprint(definition: dict) -> str:
    """The filter's tool fingerprint (core/src/inspect/fingerprint.rs): SHA-256 over the canonical
    JSON (keys sorted, no whitespace, top-level `_meta` left out), first 16 bytes in hex."""
    def enc(v) -> str:
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            out = ['"']
            for ch in v:
                if ch in '"\\':
                    out.append("\\" + ch)
                elif ord(ch) < 0x20:
                    out.append(f"\\u{ord(ch):04x}")
                else:
                    out.append(ch)
            return "".join(out) + '"'
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{enc(k)}:{enc(v[k])}" for k in sorted(v)) + "}"
        raise TypeError(f"no floats in test definitions: {v!r}")

    top = {k: v for k, v in definition.items() if k != "_meta"}
    return hashlib.sha256(enc(top).encode()).digest()[:16].hex()


def tools_of(answer: Answer, id: int | str = 1) -> dict[str, dict]:
    """The tools of a successful raw tools/list answer, by name (and checks it is for `id`)."""
    msg = answer.message()
    assert msg.get("id") == id, msg
    assert "result" in msg, msg
    return {t["name"]: t for t in msg["result"]["tools"]}


def assert_blocked(answer: Answer, id: int | str, rules: set[str]) -> dict:
    """A well-formed JSON-RPC error for the agent's id: the degraded code, reason `blocked`, the
    rules named in `detail`."""
    assert answer.status == 200, (answer.status, answer.body[:300])
    msg = answer.message()
    assert msg["id"] == id, msg
    err = msg.get("error")
    assert err, msg
    assert err["code"] == DEGRADED_CODE, err
    assert err["data"]["reason"] == "blocked", err
    for rule in rules:
        assert rule in err["data"]["detail"], (rule, err["data"])
    return err


def assert_penalized(rig: Rig, severity: str, cluster: str = PRIMARY) -> dict:
    """The score's security component fell at least as the trust model says for one event of
    `severity` (security = e^-penalty)."""
    def fell():
        view = rig.view(cluster)
        b = view.get("breakdown", {})
        # The penalty decays from the moment it is added (half-life: a week), hence the margin.
        return view if b.get("security_penalty", 0) >= PENALTY[severity] * 0.99 else None

    view = wait_until(fell, 10, f"the security penalty of {cluster}", interval=0.1)
    b = view["breakdown"]
    assert math.isclose(b["security"], math.exp(-b["security_penalty"]), rel_tol=1e-3), b
    assert view["score"] < 1.0
    return view


def by_rule(events: list[dict]) -> dict[str, dict]:
    return {e["rule"]: e for e in events}


# ------------------------------------------------------------------------------------------------
# The malicious server itself (no sidecar): it sends what the cases below rely on


def test_the_malicious_server_sends_what_it_should(upstreams):
    server = upstreams["sse"]

    async def listed(url: str) -> dict:
        async with Client(url, mode="legacy", read_timeout_seconds=15, cache=None) as client:
            return {t.name: t for t in (await client.list_tools()).tools}

    assert list(asyncio.run(listed(server.url))) == BENIGN
    for payload in evil.PAYLOADS:
        server.set_mode("poison", payload=payload)
        tool = asyncio.run(listed(server.url))[evil.POISON_TOOL]
        expected = evil.poison_tool(payload)
        assert (tool.description, tool.input_schema) == (expected["description"], expected["inputSchema"]), payload
    described = {p: evil.PAYLOADS[p]["description"] for p in evil.PAYLOADS}
    assert "\u200b" in described["zero_width"] and "\u202e" in described["bidi"]
    assert any(0xE0000 <= ord(c) <= 0xE007F for c in described["tag_chars"])
    assert len(described["long"]) == 20_000

    json_server = upstreams["json"]
    json_server.set_mode("rug_pull", after=2, to="poison")
    weather = [tools_of(rpc(json_server.url, "tools/list", {}, id=i), i)["get_weather"]["description"]
               for i in range(4)]
    assert weather == [evil.BENIGN_TOOLS[0]["description"]] * 2 + [evil.RUG_PULL_POISON] * 2
    json_server.set_mode("huge_list", mb=50)
    huge = tools_of(rpc(json_server.url, "tools/list", {}, id=1, timeout=60), 1)[evil.HUGE_TOOL]
    assert len(huge["description"]) == 50 * 1024 * 1024
    json_server.set_mode("garbage_list")
    garbage = rpc(json_server.url, "tools/list", {}, id=1)
    assert (garbage.status, garbage.body) == (200, evil.GARBAGE.encode())
    server.set_mode("inject_result")
    sid = initialize(server.url)
    assert call_tool(server.url, "fetch_page", {"url": "x"}, session=sid).message()["result"]["content"][0]["text"] \
        == evil.INJECTION


# ------------------------------------------------------------------------------------------------
# Tool poisoning


@pytest.mark.parametrize("payload", list(evil.PAYLOADS))
def test_poisoned_definition_under_the_default_policy(warden, payload):
    rig = warden("json")
    rig.server.set_mode("poison", payload=payload)
    action, rules = DEFAULT_OUTCOME[payload]
    # What the server sends (straight to it, not through the sidecar), byte for byte.
    sent = tools_of(rpc(rig.server.url, "tools/list", {}, id=1), 1)[evil.POISON_TOOL]
    assert sent == evil.poison_tool(payload)
    got = rig.list_sdk()

    if action == "record":
        assert not isinstance(got, MCPError), got
        listed = {t.name: t for t in got.tools}
        assert listed[evil.POISON_TOOL].description == evil.poison_tool(payload)["description"]
        assert rig.stat("stripped") == rig.stat("blocked") == 0
    elif action == "strip":
        assert not isinstance(got, MCPError), got
        assert [t.name for t in got.tools] == BENIGN
        assert rig.stat("stripped") == 1 and rig.stat("blocked") == 0
    else:  # quarantine: blocked, and the aggregator quarantines the server
        assert isinstance(got, MCPError), got
        assert got.code == DEGRADED_CODE and got.error.data["reason"] == "blocked", got.error
        assert "unicode/tag-characters" in got.error.data["detail"]
        assert rig.stat("blocked") == 1 and rig.stat("stripped") == 0
    assert rig.stat("findings") >= len(rules)

    events = by_rule(rig.wait_events(rules))
    for rule in rules:
        e = events[rule]
        assert e["severity"] == SEVERITY[rule], e
        assert e["tool"] == evil.POISON_TOOL, e
        assert e.get("evidence"), e
        assert e.get("new_fingerprint") in (fingerprint(sent), None), e
    worst = max((SEVERITY[r] for r in rules), key=list(PENALTY).index)
    assert_penalized(rig, worst)

    if payload == "schema":
        assert "inputSchema.properties.sidenote.description" in events["poison/ignore-instructions"]["evidence"]
    if payload == "zero_width":
        assert "<U+200B>" in events["unicode/zero-width"]["evidence"]
    if payload == "tag_chars":
        # The hidden order is decoded and checked by the phrase rules too.
        assert {"poison/ignore-instructions", "poison/secret-file"} <= set(events), sorted(events)
        wait_until(lambda: rig.view().get("state") == "quarantined", 5, "the quarantine")


POLICY_CASES = ["record", "strip", "block", "quarantine"]


@pytest.mark.both_hosts
@pytest.mark.parametrize("action", POLICY_CASES)
def test_policy_action_for_a_high_finding(warden, action):
    """The <IMPORTANT> block (high findings) under each action for `high`, on the SSE server
    (answers held and re-framed as SSE)."""
    rig = warden("sse", inspection={"policy": {"high": action}})
    rig.server.set_mode("poison", payload="important_block")
    sid = initialize(rig.url)
    answer = rig.list_raw(id="list-1", session=sid)
    high = {"poison/hidden-block", "poison/secret-file", "poison/secret-request"}

    if action in ("record", "strip"):
        assert answer.status == 200
        assert answer.header("content-type").startswith("text/event-stream")
        assert answer.body.lstrip().startswith(b"event: message"), answer.body[:200]
        tools = tools_of(answer, "list-1")
        if action == "record":
            assert tools[evil.POISON_TOOL]["description"] == evil.IMPORTANT_BLOCK
            assert rig.stat("stripped") == 0
        else:
            assert list(tools) == BENIGN
            assert tools["get_weather"]["description"] == evil.BENIGN_TOOLS[0]["description"]
            assert rig.stat("stripped") == 1
        assert rig.stat("blocked") == 0
    else:
        assert_blocked(answer, "list-1", high)
        assert rig.stat("blocked") == 1 and rig.stat("stripped") == 0
    assert rig.stat("findings") >= len(high)

    events = rig.wait_events(high)
    assert all(e["tool"] == evil.POISON_TOOL for e in events if e["rule"] in high)
    view = assert_penalized(rig, "high")
    if action == "quarantine":
        view = wait_until(lambda: (v := rig.view()).get("state") == "quarantined" and v, POLL_MS / 1000 * 4 + 2,
                          "the quarantine the policy asked for")
        assert "policy asks for quarantine" in json.dumps(view.get("quarantine", {})), view.get("quarantine")
        # The sidecar learns it at its next poll and stops calling the server.
        wait_until(lambda: call_tool(rig.url, "word_count", {"text": "a b"}, session=sid)
                   .header("x-mcp-warden-degraded") == "quarantined", 5, "the sidecar to enforce the quarantine")
    else:
        assert "policy asks for quarantine" not in json.dumps(view.get("quarantine") or {})
    # The agent's session still works for the server's other tools (unless quarantined).
    if action != "quarantine":
        ok = call_tool(rig.url, "word_count", {"text": "one two three"}, session=sid, id=5)
        if ok.header("x-mcp-warden-degraded") is None:  # the score may already have cut it off
            assert ok.message()["result"]["content"][0]["text"] == "3"


def test_strip_keeps_everything_but_the_poisoned_tool(warden):
    """The rewrite keeps the id, the other tools and the bytes outside the list as the server sent them."""
    rig = warden("json")
    rig.server.set_mode("poison", payload="exfil_url")
    direct = rpc(rig.server.url, "tools/list", {}, id=41)
    via = rig.list_raw(id=41)
    assert via.status == 200 and via.header("content-type") == "application/json"
    sent, got = json.loads(direct.body), json.loads(via.body)
    assert got["id"] == 41 and got["jsonrpc"] == "2.0"
    assert got["result"]["tools"] == [t for t in sent["result"]["tools"] if t["name"] != evil.POISON_TOOL]
    assert {k: v for k, v in got["result"].items() if k != "tools"} == \
           {k: v for k, v in sent["result"].items() if k != "tools"}


def test_the_same_list_again_is_not_inspected_twice(warden):
    """Each VM remembers the last list result of a server by hash: an identical one (another
    request id) gets the same decision without its findings counted again; a changed one is
    inspected."""
    rig = warden("json")
    rig.server.set_mode("poison", payload="long")  # recorded (low): forwarded as sent
    assert evil.POISON_TOOL in tools_of(rig.list_raw(id=60), 60)
    per_inspection = rig.stat("findings")
    assert per_inspection > 0
    for i in range(1, 6):
        assert evil.POISON_TOOL in tools_of(rig.list_raw(id=60 + i), 60 + i)
    # Two worker VMs: each inspects this result once at most; every other answer is a cache hit.
    assert rig.stat("findings") <= 2 * per_inspection
    before = rig.stat("findings")
    rig.server.set_mode("poison", payload="exfil_url")  # a different list: inspected, stripped
    assert evil.POISON_TOOL not in tools_of(rig.list_raw(id=70), 70)
    assert rig.stat("findings") > before and rig.stat("stripped") == 1


# ------------------------------------------------------------------------------------------------
# Rug pulls


@pytest.mark.both_hosts
def test_rug_pull_to_a_poisoned_definition(warden):
    rig = warden("json")
    rig.server.set_mode("rug_pull", after=2, to="poison")
    first = tools_of(rig.list_raw(id=1), 1)
    second = tools_of(rig.list_raw(id=2), 2)
    assert first == second and list(first) == BENIGN
    assert rig.stat("findings") == 0
    # The third listing changes get_weather; under the default policy the poisoned tool is
    # stripped (high findings) and the change itself is recorded (medium).
    third = tools_of(rig.list_raw(id=3), 3)
    assert list(third) == ["read_note", "word_count"]
    assert third["read_note"] == first["read_note"]
    assert rig.stat("stripped") == 1

    old = fingerprint(first["get_weather"])
    new = fingerprint(first["get_weather"] | {"description": evil.RUG_PULL_POISON})
    assert old != new
    events = by_rule(rig.wait_events({"pin/tool-changed", "poison/hidden-block", "poison/secret-file"}))
    pin = events["pin/tool-changed"]
    assert pin["severity"] == "medium" and pin["tool"] == "get_weather"
    assert (pin["old_fingerprint"], pin["new_fingerprint"]) == (old, new)
    assert events["poison/hidden-block"]["tool"] == "get_weather"
    assert_penalized(rig, "high")


def test_rug_pull_to_a_different_definition_is_reported_once_and_repinned(warden):
    """A changed (not poisoned) definition: medium, recorded, reported once; the new definition
    becomes the pin (docs/SECURITY.md, Pinning), so changing back is a change again."""
    rig = warden("sse")
    rig.server.set_mode("rug_pull", after=1, to="different")
    sid = initialize(rig.url)
    first = tools_of(rig.list_raw(id=1, session=sid), 1)
    assert first["get_weather"]["description"] == evil.BENIGN_TOOLS[0]["description"]
    # The agent sees the new definition as sent, every time.
    for i in (2, 3, 4):
        assert tools_of(rig.list_raw(id=i, session=sid), i)["get_weather"]["description"] == evil.RUG_PULL_DIFFERENT
    assert rig.stat("stripped") == rig.stat("blocked") == 0
    assert rig.stat("findings") == 1

    old = fingerprint(first["get_weather"])
    new = fingerprint(first["get_weather"] | {"description": evil.RUG_PULL_DIFFERENT})
    pin = by_rule(rig.wait_events({"pin/tool-changed"}))["pin/tool-changed"]
    assert (pin["severity"], pin["tool"]) == ("medium", "get_weather")
    assert (pin["old_fingerprint"], pin["new_fingerprint"]) == (old, new)
    assert_penalized(rig, "medium")

    # Back to the first definition: a change from the new pin.
    rig.server.set_mode("benign")
    listed = rig.list_sdk()
    assert not isinstance(listed, MCPError), listed
    assert {t.name: t.description for t in listed.tools}["get_weather"] == evil.BENIGN_TOOLS[0]["description"]
    assert rig.stat("findings") == 2

    def changes():
        found = {(e["old_fingerprint"], e["new_fingerprint"]) for e in rig.events() if e["rule"] == "pin/tool-changed"}
        return found if len(found) == 2 else None

    assert wait_until(changes, 10, "the second pin change", interval=0.1) == {(old, new), (new, old)}
    assert all(e["reports"] == 1 for e in rig.events() if e["rule"] == "pin/tool-changed")


def test_with_the_defaults_a_changed_tool_is_held_out_until_cleared(warden):
    """The hold (the default rug-pull policy) with the detector on: a definition that changes to a
    poisoned one is held out of every later list (its pin stays the old one), with a `pin/tool-held`
    event; back to the pinned definition, the list passes whole. (Quarantine is moved out of reach:
    at the default threshold this payload quarantines the server, which blocks the whole list.)"""
    rig = warden("json", inspection={"detector": {"enabled": True, "quarantine": 50}, "rug_pull": {"default": "hold"}})
    rig.server.set_mode("rug_pull", after=1, to="poison")
    first = tools_of(rig.list_raw(id=1), 1)
    assert list(first) == BENIGN
    for i in (2, 3):
        listed = tools_of(rig.list_raw(id=i), i)
        assert "get_weather" not in listed and listed["read_note"] == first["read_note"]
    events = by_rule(rig.wait_events({"pin/tool-changed", "pin/tool-held"}))
    assert events["pin/tool-held"]["tool"] == "get_weather"
    rig.server.set_mode("benign")
    assert list(tools_of(rig.list_raw(id=4), 4)) == BENIGN


CTL = AGGREGATOR_BIN.parent / "mcp-warden-ctl"


def ctl(agg: Aggregator, *args: str, token: str = "operator-token-testbed") -> str:
    """`mcp-warden-ctl` against `agg`; its standard output (fails the test when it fails)."""
    env = {"PATH": "/usr/bin:/bin", "MCP_WARDEN_URL": agg.url, "MCP_WARDEN_TOKEN": token}
    done = subprocess.run([str(CTL), *args], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.both_hosts
def test_a_held_change_comes_back_once_an_operator_approves_it(warden):
    """A rug pull end to end under the default policy (hold), through the official SDK client: a
    cosmetic change (the schema's keys reordered) is no change; a new required parameter is held
    out of every list and reported; the aggregator lists it; an operator approves its new
    fingerprint with `mcp-warden-ctl` (audited); the approval reaches the sidecar with the scores
    and the tool comes back, with its new schema, and stays."""
    rig = warden("json", inspection=DEFAULTS)

    def tools() -> dict:
        listed = rig.list_sdk()
        assert not isinstance(listed, MCPError), listed
        return {t.name: t for t in listed.tools}

    first = tools()
    assert list(first) == BENIGN
    rig.server.set_mode("rug_pull", after=0, to="cosmetic")
    raw = rig.list_raw(id=2)
    cosmetic = tools_of(raw, 2)["get_weather"]
    assert list(cosmetic["inputSchema"]) != list(evil.BENIGN_TOOLS[0]["inputSchema"]), "the key order changed"
    assert fingerprint(cosmetic) == fingerprint(evil.BENIGN_TOOLS[0])
    assert list(tools()) == BENIGN
    assert rig.stat("findings") == 0 and rig.stat("stripped") == 0

    rig.server.set_mode("rug_pull", after=0, to="wider")
    for _ in range(2):
        listed = tools()
        assert "get_weather" not in listed and set(listed) == set(BENIGN) - {"get_weather"}
    assert rig.stat("stripped") >= 2
    new = fingerprint(evil.BENIGN_TOOLS[0] | {"inputSchema": evil.RUG_PULL_WIDER_SCHEMA})

    def held_change():
        _, _, view = rig.agg.api("GET", f"/v1/approvals?server={PRIMARY}", token="reader-token-testbed")
        return [h for h in view.get("held", []) if h["fingerprint"] == new] or None

    held = wait_until(held_change, 10, "the held change at the aggregator", interval=0.1)[0]
    assert (held["tool"], held["old_fingerprint"]) == ("get_weather", fingerprint(evil.BENIGN_TOOLS[0])), held
    assert "gains a capability" in held["why"], held
    assert new in ctl(rig.agg, "held", token="reader-token-testbed")

    out = ctl(rig.agg, "approve", PRIMARY, new, "--reason", "units parameter reviewed")
    assert f"approved {new} of tool `get_weather`" in out, out

    def back():
        listed = tools()
        return listed if "get_weather" in listed else None

    listed = wait_until(back, 10, "get_weather back in the list after the approval", interval=0.2)
    assert listed["get_weather"].input_schema["required"] == ["city", "units"]
    assert list(tools()) == BENIGN, "it stays (the sidecar pinned the approved definition)"
    _, _, view = rig.agg.api("GET", f"/v1/approvals?server={PRIMARY}", token="reader-token-testbed")
    assert view["held"] == [] and [a["fingerprint"] for a in view["approvals"]] == [new], view
    _, _, audit = rig.agg.api("GET", f"/v1/audit?server={PRIMARY}")
    assert [e["action"] for e in audit["entries"]] == ["approve_tool"], audit


@pytest.mark.both_hosts
def test_the_aggregator_scans_each_new_definition_once_and_its_verdict_is_enforced(warden):
    """The mesh-wide scan, through the official SDK client: a sidecar whose own policy only records
    high findings (phrase rules alone) lets the poisoned tool through, and sends the definitions it
    had not seen to the aggregator, which scans each once (built-in detector and policy) and
    publishes a verdict by fingerprint; at its next poll the sidecar strips the tool whatever its
    own policy says. The honest tools get no verdict."""
    rig = warden("json", inspection={"policy": {"high": "record"}})
    rig.server.set_mode("poison", payload="important_block")

    def tools() -> dict:
        listed = rig.list_sdk()
        assert not isinstance(listed, MCPError), listed
        return {t.name: t for t in listed.tools}

    raw = tools_of(rig.list_raw(id=1), 1)
    assert set(raw) == {*BENIGN, evil.POISON_TOOL}, "recorded only by the sidecar's own policy"
    assert set(tools()) == set(raw)
    poisoned = fingerprint(raw[evil.POISON_TOOL])

    def verdict():
        _, _, doc = rig.agg.api("GET", "/v1/scores", token="reader-token-testbed")
        return [v for v in doc.get("verdicts", []) if v["fingerprint"] == poisoned] or None

    v = wait_until(verdict, 10, "the aggregator's verdict on the poisoned definition", interval=0.1)[0]
    assert v["severity"] in ("high", "critical") and v["tool"] == evil.POISON_TOOL, v
    _, _, doc = rig.agg.api("GET", "/v1/scores", token="reader-token-testbed")
    assert len(doc["verdicts"]) == 1, "the honest definitions scanned clean"

    def enforced():
        listed = tools()
        return listed if evil.POISON_TOOL not in listed else None

    listed = wait_until(enforced, 10, "the sidecar to enforce the verdict", interval=0.2)
    assert set(listed) == set(BENIGN)
    assert rig.stat("stripped") >= 1
    events = by_rule(rig.wait_events({"mesh/verdict"}))
    assert events["mesh/verdict"]["tool"] == evil.POISON_TOOL
    assert events["mesh/verdict"]["new_fingerprint"] == poisoned
    # Scanned once: the sidecar sent each definition once, and listing again sends nothing new.
    _, _, again = rig.agg.api("POST", "/v1/definitions", {"definitions": [
        {"server": PRIMARY, "definition": t} for t in raw.values()]}, token="scanner-token-testbed")
    assert (again["scanned"], again["known"]) == (0, len(raw)), again


# ------------------------------------------------------------------------------------------------
# Shadowing


@pytest.mark.both_hosts
def test_a_tool_named_like_another_servers_is_a_shadowing_event(warden, upstreams):
    rig = warden("json", shadow=True)
    # The honest server lists first (its names are its own), then the malicious one, benign: no overlap.
    calc = rpc(rig.url, "tools/list", {}, id=1, host=CALC_HOST)
    assert "add" in tools_of(calc, 1)
    assert "add" not in tools_of(rig.list_raw(id=2), 2)
    # Now the malicious server lists an `add` of its own.
    rig.server.set_mode("shadow", tool="add")
    tools = tools_of(rig.list_raw(id=3), 3)
    assert "add" in tools  # medium: recorded, not stripped
    assert rig.stat("findings") >= 1 and rig.stat("stripped") == 0

    def shadow_events():
        return [e for c in (PRIMARY, CALC) for e in rig.events(c) if e["rule"] == "shadow/cross-server-tool"]

    found = wait_until(shadow_events, 10, "a shadowing event", interval=0.1)
    assert {e["tool"] for e in found} == {"add"}
    assert all(e["severity"] == "medium" for e in found)
    assert any(e in rig.events(PRIMARY) for e in found), "the shadowing server is named"
    # The honest server's own listing still passes unchanged.
    assert tools_of(rpc(rig.url, "tools/list", {}, id=4, host=CALC_HOST), 4) == tools_of(calc, 1)


# ------------------------------------------------------------------------------------------------
# Size and shape


@pytest.mark.parametrize("policy", ["default", "block_low"])
def test_a_50_mb_list(warden, policy):
    """Too large to hold (past `inspection.max_list_bytes`): reported, and passed or blocked as the policy
    for its (low) severity says. Either way a well-formed answer, and the VM lives on."""
    # A policy may not be milder for a higher severity: blocking low findings blocks the rest too.
    inspection = None if policy == "default" else {"policy": {"low": "block", "medium": "block", "high": "block"}}
    rig = warden("json", inspection=inspection)
    rig.server.set_mode("huge_list", mb=50)
    t0 = time.monotonic()
    try:
        answer = rig.list_raw(id=7)
    except http.client.HTTPException as e:
        time.sleep(0.5)  # the access log is written when the stream ends
        raise AssertionError(f"the agent got a broken answer ({e!r}); access log:\n{access_log(rig.envoy)}"
                             f"\nEnvoy:\n{rig.envoy.log_tail(15)}") from None
    elapsed = time.monotonic() - t0
    print(f"50 MB tools/list through the sidecar ({policy}): {len(answer.body)} bytes in {elapsed:.1f} s")
    if policy == "default":
        tools = tools_of(answer, 7)
        assert len(tools[evil.HUGE_TOOL]["description"]) == 50 * 1024 * 1024
        assert rig.stat("blocked") == 0
    else:
        assert_blocked(answer, 7, {"protocol/oversized-body"})
        assert rig.stat("blocked") == 1
    e = by_rule(rig.wait_events({"protocol/oversized-body"}))["protocol/oversized-body"]
    assert e["severity"] == "low", e
    # The VM did not crash: stats are served, and the next request is fine.
    assert rig.envoy.stat(f"{P}{PRIMARY}.requests") >= 1
    rig.server.set_mode("benign")
    assert list(tools_of(rig.list_raw(id=8), 8)) == BENIGN
    ok = rpc(rig.url, "tools/call", {"name": "word_count", "arguments": {"text": "a b c"}}, id=9)
    assert ok.message()["result"]["content"][0]["text"] == "3"
    assert "panicked" not in rig.envoy.log_text()


@pytest.mark.parametrize("transport", ["json", "sse"])
def test_a_garbage_list(warden, transport):
    """HTTP 200 with a body that is not JSON-RPC: the breaker contract (garbage streams through
    as the server sent it, or a well-formed degraded answer), a malformed failure, a protocol event."""
    rig = warden(transport)
    sid = initialize(rig.url) if rig.sse else None
    rig.server.set_mode("garbage_list")
    answer = rig.list_raw(id=11, session=sid)
    assert answer.status == 200
    if evil.GARBAGE.encode() in answer.body:
        expected = (f"event: message\r\ndata: {evil.GARBAGE}\r\n\r\n" if rig.sse else evil.GARBAGE).encode()
        assert answer.body == expected
    else:
        msg = answer.message()
        assert msg["id"] == 11 and msg["error"]["code"] == DEGRADED_CODE, msg
    assert rig.envoy.stat(f"{P}{PRIMARY}.failure.malformed") == 1
    e = by_rule(rig.wait_events({"protocol/malformed"}))["protocol/malformed"]
    assert e["severity"] == "low"
    assert_penalized(rig, "low")
    # The server's next good answer passes.
    rig.server.set_mode("benign")
    assert list(tools_of(rig.list_raw(id=12, session=sid), 12)) == BENIGN


# ------------------------------------------------------------------------------------------------
# Tool results


@pytest.mark.both_hosts
def test_an_injected_tool_result_is_recorded_and_delivered_unchanged(warden):
    rig = warden("sse")
    rig.server.set_mode("inject_result")

    async def run():
        async with Client(rig.url, mode="legacy", read_timeout_seconds=15, cache=None) as client:
            listed = await client.list_tools()
            result = await client.call_tool("fetch_page", {"url": "https://docs.example/start"})
            return [t.name for t in listed.tools], result

    names, result = asyncio.run(run())
    assert names == [*BENIGN, "fetch_page"]  # a clean definition
    assert result.is_error is False
    assert result.content[0].text == evil.INJECTION
    # The result is inspected at the end of its SSE stream, which may close just after the
    # client has read the answer event.
    wait_until(lambda: rig.stat("findings") >= 1, 5, "the tool result's findings")
    assert rig.stat("stripped") == rig.stat("blocked") == 0
    rules = {"poison/ignore-instructions", "poison/exfil-url"}
    events = by_rule(rig.wait_events(rules))
    for rule in rules:
        assert events[rule]["severity"] == "medium", events[rule]  # the rule's result severity
        assert events[rule]["tool"] == "fetch_page"
        assert "content[0].text" in events[rule]["evidence"]
    assert_penalized(rig, "medium")
    # A raw call gets the server's bytes too.
    sid = initialize(rig.url)
    raw = call_tool(rig.url, "fetch_page", {"url": "https://docs.example/start"}, session=sid, id=3)
    direct = call_tool(rig.server.url, "fetch_page", {"url": "https://docs.example/start"},
                       session=initialize(rig.server.url), id=3)
    assert raw.message()["result"] == direct.message()["result"]
