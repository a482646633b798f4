"""Launcher for ``servers/malicious_server.py``: a malicious MCP server (official Python SDK) whose
attack the security tests switch live (poisoned definitions, rug pulls, shadowing, huge and
garbage lists, injected tool results). Started in its own process group and stopped by PID,
like the testbed's other processes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warden_testbed import FaultServer, http_json

MALICIOUS_SERVER = Path(__file__).resolve().parent / "servers" / "malicious_server.py"


@dataclass
class MaliciousServer(FaultServer):
    """`servers/malicious_server.py` on loopback ports: started, waited for and stopped like a
    `FaultServer` (same command line and health endpoint); its switch is `set_mode`."""

    mode: str = "json"  # "sse": stateful SSE answers; "json": stateless JSON answers
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-warden-malicious-")))
    script = MALICIOUS_SERVER

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def set_mode(self, mode: str, **params: Any) -> dict:
        """Switches the attack (see servers/README.md); resets the rug pull's list count."""
        status, _, body = http_json("POST", f"{self.control}/mode", {"mode": mode, **params})
        if status != 200:
            raise RuntimeError(f"mode switch refused {mode}: {status} {body}")
        return body

    def current_mode(self) -> dict:
        return http_json("GET", f"{self.control}/mode")[2]
