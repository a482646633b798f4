"""Launcher for ``servers/malicious_server.py``: a malicious MCP server (official Python SDK) whose
attack the security tests switch live (poisoned definitions, rug pulls, shadowing, huge and
garbage lists, injected tool results). Started in its own process group and stopped by PID,
like the testbed's other processes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warden_testbed import free_port, http_json, stop_process, wait_until

MALICIOUS_SERVER = Path(__file__).resolve().parent / "servers" / "malicious_server.py"


@dataclass
class MaliciousServer:
    """`servers/malicious_server.py` on loopback ports."""

    name: str
    mode: str = "json"  # "sse": stateful SSE answers; "json": stateless JSON answers
    allowed_hosts: list[str] = field(default_factory=list)
    port: int = 0
    control_port: int = 0
    proc: subprocess.Popen | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-warden-malicious-")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def spawn(self) -> "MaliciousServer":
        """Starts the process without waiting (see :meth:`wait_up`)."""
        self.port = self.port or free_port()
        self.control_port = self.control_port or free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, str(MALICIOUS_SERVER),
                "--name", self.name,
                "--port", str(self.port),
                "--control-port", str(self.control_port),
                "--mode", self.mode,
                *[arg for h in self.allowed_hosts for arg in ("--allowed-host", h)],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_up(self, timeout: float = 30.0) -> "MaliciousServer":
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            status, _, body = http_json("GET", f"{self.control}/health", timeout=1)
            return status == 200 and body.get("mcp_up")

        wait_until(up, timeout, f"malicious MCP server {self.name}")
        return self

    def start(self, timeout: float = 30.0) -> "MaliciousServer":
        return self.spawn().wait_up(timeout)

    def set_mode(self, mode: str, **params: Any) -> dict:
        """Switches the attack (see servers/README.md); resets the rug pull's list count."""
        status, _, body = http_json("POST", f"{self.control}/mode", {"mode": mode, **params})
        if status != 200:
            raise RuntimeError(f"mode switch refused {mode}: {status} {body}")
        return body

    def current_mode(self) -> dict:
        return http_json("GET", f"{self.control}/mode")[2]

    def stats(self) -> dict:
        return http_json("GET", f"{self.control}/stats")[2]

    def reset_stats(self) -> None:
        http_json("POST", f"{self.control}/stats/reset", {})

    def stop(self) -> None:
        stop_process(self.proc)
