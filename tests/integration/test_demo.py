"""`make run`'s demo works end to end: the breaker trips, the fallback serves, the primary returns."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from warden_testbed import ROOT


@pytest.mark.both_hosts
def test_demo_runs_through_every_phase(warden_host):
    """`make run` (and `make run HOST=native`)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "testbed" / "run.py"), "--exit-after-demo", "--step", "0.25", "--host", warden_host],
        capture_output=True, text=True, timeout=180,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    assert out.returncode == 0, text[-3000:] + out.stderr[-3000:]
    assert "demo_primary  breaker[demo_primary]=closed" in text
    assert "(fallback took over)" in text
    assert "Tool 'whoami' on MCP server 'demo' is unavailable" in text
    assert "breaker `demo_primary` closed -> open: 5 consecutive failures" in text
    assert "half_open -> closed" in text
    # Quarantine moves the agent to the fallback; release brings it back to the primary.
    quarantine = text.split("Phase 5:")[1].split("Phase 6:")[0]
    assert re.search(r"call +\d+  demo_fallback", quarantine), quarantine
    assert re.search(r"call +\d+  demo_primary", text.split("Phase 6:")[1]), text
    assert text.rstrip().endswith("Stopping...")
