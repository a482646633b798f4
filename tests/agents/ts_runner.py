"""Runs `ts_agent.mjs` (the official TypeScript SDK client) as a child process and collects its
lines as :class:`~agents.py_agent.Call` records, so both SDKs are judged the same way."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from agents.py_agent import NODE, TS_AGENT, AgentRun, Call


@dataclass
class TsAgent:
    url: str
    name: str = "ts"
    calls: int = 100
    seconds: float = 60.0
    pause_ms: int = 20
    seed: int = 1
    host: str | None = None
    reconnect: bool = False
    timeout_ms: int = 15_000
    tool: str | None = None
    wait_go: bool = False
    proc: subprocess.Popen | None = None
    run: AgentRun = field(default_factory=lambda: AgentRun("ts"))
    transport_errors: list[str] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)  # lines that are not calls (fatal, ...)
    done: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)
    calls_seen: "queue.Queue[Call]" = field(default_factory=queue.Queue)

    def start(self) -> "TsAgent":
        if not NODE.exists():
            raise RuntimeError(f"{NODE} is missing: run `make setup` (it installs testbed/package.json)")
        self.run = AgentRun(self.name)
        cmd = [str(NODE), str(TS_AGENT), self.url, "--calls", str(self.calls), "--seconds", str(self.seconds),
               "--pause-ms", str(self.pause_ms), "--seed", str(self.seed), "--timeout-ms", str(self.timeout_ms)]
        if self.host:
            cmd += ["--host", self.host]
        if self.reconnect:
            cmd.append("--reconnect")
        if self.tool:
            cmd += ["--tool", self.tool]
        if self.wait_go:
            cmd.append("--wait-go")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                self.other.append({"event": "garbled", "text": raw[:500]})
                continue
            event = line.get("event")
            if event == "connected":
                self.run.sessions.append(line.get("session"))
                self.connected.set()
            elif event == "reconnected":
                self.run.sessions.append(line.get("session"))
            elif event == "call":
                sids = set(line.get("wire_sids") or [])
                sids.update(s for s in (line.get("sid_before"), line.get("sid_after")) if s)
                call = Call(line["tool"], line["outcome"], line.get("text"), line.get("served_by"), sorted(sids),
                            line.get("ms", 0), line.get("at", time.time()), self.name)
                self.run.calls.append(call)
                self.calls_seen.put(call)
            elif event == "transport_error":
                self.transport_errors.append(line.get("message", ""))
            elif event != "done":
                self.other.append(line)
        self.done.set()

    def _drain_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        for raw in self.proc.stderr:
            if len(self.other) < 50:
                self.other.append({"event": "stderr", "text": raw.rstrip()[:500]})

    def go(self) -> None:
        """Lets an agent started with `wait_go` make its calls."""
        if self.proc and self.proc.stdin and self.proc.poll() is None:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()

    def stop_early(self) -> None:
        """Asks the agent to end its run after the call in progress."""
        if self.proc and self.proc.stdin and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()

    def wait(self, timeout: float) -> AgentRun:
        """Waits for the end of the run (then the process); stops it by PID past `timeout`."""
        finished = self.done.wait(timeout)
        if self.proc:
            try:
                self.proc.wait(5 if finished else 0.1)
            except subprocess.TimeoutExpired:
                self.kill()
        if not finished:
            raise TimeoutError(f"TypeScript agent {self.name} did not finish within {timeout:.0f} s: {self.other[-5:]}")
        return self.run

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
