"""Scanner findings become flags: `mcp-warden-ctl flags import` posts a real MCP scanner report.

The report is `docs/examples/cisco-mcp-scanner-raw.json`: Cisco AI Defense MCP Scanner
(`cisco-ai-mcp-scanner` 4.8.7, YARA analyzer) run against `testbed/servers/malicious_server.py`
in `poison` mode. It finds the poisoned `daily_quote` tool (HIGH) and nothing in the three benign
tools.
"""

from __future__ import annotations

import json
import subprocess

from warden_testbed import AGGREGATOR_BIN, ROOT, Aggregator

CTL = AGGREGATOR_BIN.parent / "mcp-warden-ctl"
REPORT = ROOT / "docs" / "examples" / "cisco-mcp-scanner-raw.json"
SERVER = "evil"


def ctl(agg: Aggregator | None, *args: str, token: str | None = "scanner-token-testbed") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if agg:
        env["MCP_WARDEN_URL"] = agg.url
    if token:
        env["MCP_WARDEN_TOKEN"] = token
    return subprocess.run([str(CTL), *args], capture_output=True, text=True, timeout=30, env=env)


def imp(agg: Aggregator | None, *extra: str, token: str | None = "scanner-token-testbed") -> subprocess.CompletedProcess:
    return ctl(agg, "flags", "import", "--format", "cisco-mcp-scanner", "--server", SERVER, *extra, str(REPORT),
               token=token)


def view(agg: Aggregator) -> dict:
    status, _, body = agg.api("GET", f"/v1/servers/{SERVER}", token="reader-token-testbed")
    assert status == 200, body
    return body


def test_dry_run_maps_the_real_report_without_a_token():
    out = imp(None, "--dry-run", token=None)
    assert out.returncode == 0, out.stderr
    flags = [json.loads(line) for line in out.stdout.splitlines()]
    assert flags == [{
        "server": SERVER, "severity": "high", "tool": "daily_quote",
        "rule": "cisco-mcp-scanner/yara_analyzer/AISubtech-1.1.1,AISubtech-8.2.3",
        "description": "Detected 3 threats: credential harvesting, coercive injection, prompt injection | "
                       "AISubtech-1.1.1 Instruction Manipulation (Direct Prompt Injection); "
                       "AISubtech-8.2.3 Data Exfiltration via Agent Tooling",
    }]
    crit = [json.loads(line) for line in imp(None, "--dry-run", "--high-as-critical", token=None).stdout.splitlines()]
    assert [f["severity"] for f in crit] == ["critical"]
    assert imp(None, "--dry-run", "--min-severity", "critical", token=None).stdout == ""


def test_imported_findings_lower_the_score_and_a_critical_one_quarantines():
    agg = Aggregator().start()
    try:
        # A server with a clean record: a sidecar reports 200 successful calls.
        status, _, body = agg.api("POST", "/v1/signals", {
            "sidecar": "sidecar-1", "batch_id": "scan-1", "period_ms": 5000,
            "servers": [{"server": SERVER, "outcomes": {"success": 200}}]}, token="sidecar-1-token-testbed")
        assert status == 200, body
        before = view(agg)
        assert before["state"] == "trusted" and before["flags"] == []

        # Only scanner and operator tokens may import.
        denied = imp(agg, token="reader-token-testbed")
        assert denied.returncode == 1 and "403" in denied.stderr

        out = imp(agg)
        assert out.returncode == 0, out.stderr
        assert "1 flags posted (1 counted, 0 already counted), 3 results skipped" in out.stdout
        after = view(agg)
        [flag] = after["flags"]
        assert (flag["severity"], flag["tool"], flag["flagged_by"]) == ("high", "daily_quote", "scanner")
        assert flag["rule"] == "cisco-mcp-scanner/yara_analyzer/AISubtech-1.1.1,AISubtech-8.2.3"
        assert after["score"] < before["score"] - 0.1, (before["score"], after["score"])
        assert after["breakdown"]["security"] < 0.7
        assert after["state"] != "quarantined"

        # The hourly re-scan: the same finding within the dedup window adds no penalty.
        again = imp(agg)
        assert again.returncode == 0, again.stderr
        assert "(0 counted, 1 already counted)" in again.stdout
        assert abs(view(agg)["breakdown"]["security"] - after["breakdown"]["security"]) < 1e-6

        # An operator who trusts this scanner's HIGH findings escalates them: quarantined at once.
        crit = imp(agg, "--high-as-critical")
        assert crit.returncode == 0, crit.stderr
        final = view(agg)
        assert final["state"] == "quarantined", final
        assert final["quarantine"]["automatic"] is True
        assert "cisco-mcp-scanner/yara_analyzer" in final["quarantine"]["reason"]
        assert {f["severity"] for f in final["flags"]} == {"high", "critical"}
        assert agg.scores()[SERVER]["state"] == "quarantined"
    finally:
        agg.stop()
