"""Load generators for `make bench`: wrk (saturation, Debian package) and oha (fixed offered rate
with coordinated-omission correction, crate from crates.io), plus CPU accounting from /proc.

Every run is bounded by its duration and a hard timeout; nothing here loops without a bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OHA = BENCH / ".tools" / "bin" / "oha"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Percentiles wrk reports for the plots and tables (its histogram has 1 us resolution).
WRK_PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]


@dataclass
class Workload:
    """One kind of request, sent the same way to every variant."""

    name: str
    path: str  # /mcp (JSON answers) or /sse (SSE answers)
    body: str
    label: str


@dataclass
class Target:
    """Where a variant takes its traffic."""

    base_url: str  # http://127.0.0.1:PORT
    host: str  # the Host header the agent sends
    path_prefix: str = ""  # ContextForge serves under /servers/<id>
    extra_headers: dict = field(default_factory=dict)
    path_map: dict = field(default_factory=dict)  # workload path -> path on this target
    body_map: dict = field(default_factory=dict)  # workload name -> body (tool names differ)

    def url(self, w: Workload) -> str:
        return self.base_url + self.path_prefix + self.path_map.get(w.path, w.path)

    def body(self, w: Workload) -> str:
        return self.body_map.get(w.name, w.body)

    def headers(self) -> dict:
        h = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        }
        h.update(self.extra_headers)
        return h


# What a fill sends: sidecars record a session when an `initialize` answer carries its id.
INITIALIZE = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
              '"capabilities":{},"clientInfo":{"name":"mcp-bench","version":"1"}}}')


def _lua_string(s: str) -> str:
    """A double-quoted Lua string literal."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + out + '"'


def wrk_script(target: Target, w: Workload, sessions: int = 0, fill: int = 0) -> str:
    """A wrk Lua script: the request, optional distinct Mcp-Session-Id values (cycling through
    `sessions` ids), and a done() that prints the results as one JSON line. A fill script sends
    each id once as `x-bench-session` instead, which the benchmark upstream answers with that
    `mcp-session-id`: to the sidecar, a session created by an `initialize` each time."""
    session_header = "X-Bench-Session" if fill else "Mcp-Session-Id"
    body = INITIALIZE if fill else target.body(w)
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines.append(f'wrk.headers["Host"] = {_lua_string(target.host)}')
    for k, v in target.headers().items():
        lines.append(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}")
    if sessions:
        lines += [
            "local n = 0",
            f"local N = {sessions}",
            "request = function()",
            "  n = n + 1",
            "  if n > N then n = 1 end",
            f'  wrk.headers["{session_header}"] = string.format("bench-session-%07d", n)',
            "  return wrk.format(nil, nil, nil, nil)",
            "end",
        ]
    if fill:
        # Say so once every session id has been sent once (the fill pass before a measurement);
        # run_fill() then ends wrk, whose own duration is only the upper bound.
        lines += [
            "local answered = 0",
            "response = function(status, headers, body)",
            "  answered = answered + 1",
            f"  if answered == {fill} then io.write('FILLED\\n'); io.flush(); wrk.thread:stop() end",
            "end",
        ]
    pct = ", ".join(str(p) for p in WRK_PERCENTILES)
    lines += [
        "done = function(summary, latency, requests)",
        f"  local ps = {{{pct}}}",
        "  local out = {}",
        "  for _, p in ipairs(ps) do out[#out + 1] = string.format('[%s, %d]', p, latency:percentile(p)) end",
        "  local e = summary.errors",
        "  io.write(string.format('WRKJSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, "
        "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}, "
        "\"mean_us\": %f, \"max_us\": %d, \"percentiles\": [%s]}\\n', summary.requests, summary.duration, "
        "summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, latency.mean, latency.max, "
        "table.concat(out, ', ')))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def run_wrk(target: Target, w: Workload, conns: int, seconds: float, sessions: int = 0, fill: int = 0,
            timeout_s: float = 10.0, workdir: Path | None = None) -> dict:
    """wrk at saturation (every connection sends its next request as soon as the answer is in)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    script = workdir / f"wrk-{w.name}-{sessions}-{fill}.lua"
    script.write_text(wrk_script(target, w, sessions, fill))
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", f"--timeout={int(timeout_s)}s",
           "-s", str(script), target.url(w)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON "):])
            break
    else:
        raise RuntimeError(f"wrk printed no result ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    dur = raw["duration_us"] / 1e6
    pct = {float(p): float(v) for p, v in raw["percentiles"]}
    pct[100.0] = float(raw["max_us"])
    errors = sum(raw["errors"].values())
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": dur,
        "rps": raw["requests"] / dur if dur else 0.0,
        "errors": errors,
        "error_detail": raw["errors"],
        "bytes": raw["bytes"],
        "p50_us": pct.get(50.0),
        "p99_us": pct.get(99.0),
        "p999_us": pct.get(99.9),
        "mean_us": raw["mean_us"],
        "max_us": raw["max_us"],
        "percentiles": sorted(pct.items()),
    }


def run_fill(target: Target, w: Workload, conns: int, sessions: int, max_seconds: float) -> dict:
    """Sends `sessions` requests, each with a distinct Mcp-Session-Id, as fast as wrk can; ends
    wrk (by its PID) as soon as its script says all were answered. Bounded by `max_seconds`."""
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    script = workdir / "fill.lua"
    script.write_text(wrk_script(target, w, sessions, fill=sessions))
    t0 = time.monotonic()
    proc = subprocess.Popen(["wrk", "-t1", f"-c{conns}", f"-d{int(max_seconds)}s", "--timeout=10s", "-s", str(script),
                             target.url(w)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    filled = False
    try:
        assert proc.stdout
        for line in proc.stdout:  # ends when wrk exits (at the latest after max_seconds)
            if line.startswith("FILLED"):
                filled = True
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return {"sessions": sessions, "filled": filled, "seconds": round(time.monotonic() - t0, 1)}


def oha_available() -> bool:
    return OHA.exists() or shutil.which("oha") is not None


def run_oha(target: Target, w: Workload, conns: int, seconds: float, rate: float, timeout_s: float = 10.0) -> dict:
    """oha at a fixed offered rate (`-q`, spread over all connections) with `--latency-correction`
    (latency counted from when the request was due, as wrk2 does: no coordinated omission)."""
    exe = str(OHA) if OHA.exists() else "oha"
    cmd = [exe, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
           "-q", str(max(1, int(rate))), "--latency-correction", "-w", "-t", f"{int(timeout_s)}s",
           "-m", "POST", "-d", target.body(w), "--host", target.host]
    for k, v in target.headers().items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(target.url(w))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    try:
        raw = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"oha printed no JSON ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}") from None
    s = raw["summary"]
    statuses = {int(k): v for k, v in (raw.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    total = sum(statuses.values())
    errs = sum((raw.get("errorDistribution") or {}).values())
    lp = raw.get("latencyPercentiles") or {}
    to_us = lambda v: None if v is None else float(v) * 1e6  # noqa: E731
    pcts = []
    for key, value in lp.items():
        try:
            pcts.append((float(key.lstrip("p")), to_us(value)))
        except (TypeError, ValueError):
            continue
    if s.get("fastest") is not None:
        pcts.append((0.0, to_us(s["fastest"])))
    if s.get("slowest") is not None:
        pcts.append((100.0, to_us(s["slowest"])))
    pcts.sort()
    pmap = dict(pcts)
    seconds_run = float(s.get("total") or seconds)
    return {
        "tool": "oha",
        "offered_rps": rate,
        "requests": total,
        "seconds": seconds_run,
        "rps": ok / seconds_run if seconds_run else 0.0,
        "errors": errs + (total - ok),
        "error_detail": {"non_2xx": total - ok, **(raw.get("errorDistribution") or {})},
        "p50_us": pmap.get(50.0),
        "p99_us": pmap.get(99.0),
        "p999_us": pmap.get(99.9),
        "mean_us": to_us(s.get("average")),
        "max_us": to_us(s.get("slowest")),
        "percentiles": pcts,
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid` (each process
    here runs in its own session, so that is the variant and whatever it forked)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces: fields start after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) != pgid:  # field 5 (pgrp), counted from field 3 (state)
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def perf_available() -> bool:
    return shutil.which("perf") is not None


def perf_record(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Starts `perf record` on one process for `seconds` (sampling at 999 Hz, no call graphs)."""
    if not perf_available():
        return None
    return subprocess.Popen(["perf", "record", "-F", "999", "-p", str(pid), "-o", str(out), "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def perf_dso_shares(data: Path) -> dict[str, float]:
    """Share of samples per shared object: `[JIT] …` is V8's compiled code (the wasm filter),
    `envoy` the stripped Envoy binary (proxying, V8's runtime, the proxy-wasm host functions)."""
    p = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-g", "none"],
                       capture_output=True, text=True, timeout=120)
    shares: dict[str, float] = {}
    for line in p.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line:
            continue
        pct, _, dso = line.partition("%")
        try:
            value = float(pct) / 100
        except ValueError:
            continue
        dso = dso.strip()
        if dso.startswith("[JIT]"):
            dso = "[JIT] (wasm)"
        elif dso.startswith("["):
            dso = dso  # [kernel.kallsyms], [vdso]
        shares[dso] = shares.get(dso, 0.0) + value
    return shares
