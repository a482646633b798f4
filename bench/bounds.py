"""What mcp-warden's bounded maps cost and keep, in a real Envoy (issue 7): `make bench-bounds`.

Two Envoys (1.40, `--concurrency 2`, the rmcp upstream from `bench/upstream`), one after the other:

1. sessions: one logical server whose primary (`dead`, a closed port) is tripped open, so every
   session is created on the fallback and recorded. The fill sends one `initialize` per id (the
   upstream answers `x-bench-session: ID` with `mcp-session-id: ID`), then every id once as
   `Mcp-Session-Id`: a request whose record is found goes straight to the fallback, one whose record
   is gone asks the dead primary's breaker first (counted in `dead.rejected`). Survival =
   1 - rejected / requests, at 10,000 and 100,000 distinct sessions.
2. servers: 10,000 logical servers (distinct authorities) over 100 Envoy clusters (10,000 Envoy
   clusters would measure Envoy's cluster manager, not the filter), with a `trust` section whose
   aggregator is down, so outcome counts and security events pile up in the pending signals (capped
   per cluster). One `tools/list` per server fills the tool catalogs, pins and the tool-owners
   index (every server lists the same 100 tools: each one after the first is a shadowing finding).

Memory after each step: Envoy's admin `/memory` (`allocated` by tcmalloc, where shared data
lives; `heap_size`), the process RSS, and the wasm VMs' linear memories (V8 reserves each in a
mapping of 8 GiB or more: the RSS of those mappings, from /proc/PID/smaps). Bounded: about 3 to 4
minutes; every process is started in its own session and stopped by PID.

    .venv/bin/python bench/bounds.py [--out docs/results] [--wasm PATH] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from loadgen import INITIALIZE, _lua_string  # noqa: E402
from variants import AGENT_HOST, LONG_OPEN_MS, UPSTREAM_BIN, EnvoyVariant, warden_bootstrap  # noqa: E402
from warden_testbed import WASM, bootstrap, free_port, http_json, stop_process  # noqa: E402

TOOLS_CALL_SMALL = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"small","arguments":{}}}'
TOOLS_LIST = '{"jsonrpc":"2.0","id":3,"method":"tools/list"}'
SERVERS_HOST = "s%05d.bounds.mcp.local"
DEAD_REJECTED = "wasmcustom.mcp_warden.cluster.dead.rejected"
WASM_RESERVATION = 8 << 30  # V8 reserves a wasm memory with guard regions: 8 GiB (minus a page or two)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# Measuring


def wasm_memory(pid: int) -> tuple[int, int, int]:
    """(count, size, RSS) of the wasm linear memories of process `pid`. V8 reserves 8 GiB per
    memory (the rest is a guard region) and makes the used part read-write: in smaps, a `rw-p`
    mapping directly followed by the `---p` rest of the reservation."""
    maps: list[list] = []  # [start, end, perms, rss]
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if "-" in parts[0] and not parts[0].endswith(":"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    maps.append([lo, hi, parts[1], 0])
                elif parts[0] == "Rss:" and maps:
                    maps[-1][3] = int(parts[1]) * 1024
    except OSError:
        return 0, 0, 0
    count = size = rss = 0
    for used, rest in zip(maps, maps[1:]):
        if rest[1] - used[0] >= WASM_RESERVATION - (64 << 20) and rest[2] == "---p" and used[2] == "rw-p" and used[1] == rest[0]:
            count, size, rss = count + 1, size + used[1] - used[0], rss + used[3]
    return count, size, rss


def memory(v: EnvoyVariant) -> dict:
    m = v.memory()
    count, size, rss = wasm_memory(v.pid)
    return {"allocated": m.get("allocated", 0), "heap_size": m.get("heap_size", 0), "rss": m.get("rss", 0),
            "wasm_memories": count, "wasm_size": size, "wasm_rss": rss}


def wasm_cell(m: dict) -> str:
    return f"{mib(m['wasm_size'])} / {mib(m['wasm_rss'])} ({m['wasm_memories']})"


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f}"


def wrk_pass(base_url: str, body: str, count: int, header: str, fmt: str, host: str | None = None,
             host_fmt: str | None = None, first: int = 1, step: int = 1, conns: int = 32,
             max_seconds: int = 240) -> dict:
    """Sends `count` requests with `header: fmt % i` (and Host `host_fmt % i`) for i = first,
    first + step, ...; ends wrk by its PID once all were answered. Bounded by `max_seconds`."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}",
             'wrk.headers["Content-Type"] = "application/json"',
             'wrk.headers["Accept"] = "application/json, text/event-stream"',
             'wrk.headers["MCP-Protocol-Version"] = "2025-11-25"',
             f'wrk.headers["Host"] = {_lua_string(host or AGENT_HOST)}',
             f"local n = {first - step}", f"local last = {first + (count - 1) * step}",
             "request = function()",
             f"  n = n + {step}",
             "  if n > last then n = last end"]
    if header:
        lines.append(f'  wrk.headers["{header}"] = string.format({_lua_string(fmt)}, n)')
    if host_fmt:
        lines.append(f'  wrk.headers["Host"] = string.format({_lua_string(host_fmt)}, n)')
    lines += ["  return wrk.format(nil, nil, nil, nil)", "end",
              "local answered, bad = 0, 0",
              "response = function(status, headers, body)",
              "  answered = answered + 1",
              "  if status ~= 200 then bad = bad + 1 end",
              f"  if answered == {count} then io.write(string.format('DONE %d\\n', bad)); io.flush(); wrk.thread:stop() end",
              "end"]
    script = Path(tempfile.mkdtemp(prefix="mcp-bounds-")) / "pass.lua"
    script.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    proc = subprocess.Popen(["wrk", "-t1", f"-c{min(conns, count)}", f"-d{max_seconds}s", "--timeout=10s", "-s",
                             str(script), base_url + "/mcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    done, bad = False, None
    try:
        assert proc.stdout
        for line in proc.stdout:
            if line.startswith("DONE"):
                done, bad = True, int(line.split()[1])
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return {"requests": count, "done": done, "non_200": bad, "seconds": round(time.monotonic() - t0, 1)}


def settle(v: EnvoyVariant, stat: str, timeout: float = 10.0) -> int:
    """The value of `stat` once it stopped moving (wrk's last in-flight requests have landed)."""
    last, deadline = v.envoy.stat(stat), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = v.envoy.stat(stat)
        if now == last:
            return now
        last = now
    return last


def post(base_url: str, host: str, body: str, headers: dict | None = None) -> tuple[int, dict]:
    status, hdrs, _ = http_json("POST", base_url + "/mcp", json.loads(body), headers={
        "Host": host, "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25",
        **(headers or {})}, timeout=30)
    return status, {k.lower(): v for k, v in (hdrs or {}).items()}


# ------------------------------------------------------------------------------------------------
# Phases


def start_upstream(hosts: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [str(UPSTREAM_BIN), "--listen", f"127.0.0.1:{port}", "--allowed-host", AGENT_HOST]
    for h in hosts:
        args += ["--allowed-host", h]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        raise RuntimeError(f"upstream did not start: {line!r}")
    return proc, port


def sessions_phase(wasm: Path, upstream_port: int, counts: list[int], stack: contextlib.ExitStack,
                   fill_seconds: int) -> dict:
    dead_port = free_port()
    plugin = {
        "servers": [{"name": "bench", "match": {"authority": AGENT_HOST}, "primary": "dead", "fallbacks": ["upstream"]}],
        "clusters": {"dead": {"breaker": {"open_duration_ms": LONG_OPEN_MS, "open_duration_max_ms": LONG_OPEN_MS}}},
    }
    v = EnvoyVariant("sessions", warden_bootstrap(upstream_port, dead_port, plugin, wasm_path=wasm)).start(2)
    stack.callback(v.stop)
    for _ in range(50):  # trip the dead primary (bounded)
        post(v.base_url, AGENT_HOST, TOOLS_CALL_SMALL)
        if v.envoy.stat("wasmcustom.mcp_warden.cluster.dead.breaker.state") == 1:
            break
    else:
        raise RuntimeError("the dead primary's breaker did not open")
    out = {"idle": memory(v), "points": []}
    log(f"sessions: Envoy ready, dead primary open; idle RSS {mib(out['idle']['rss'])} MiB")
    filled = 0
    requests = "wasmcustom.mcp_warden.server.bench.requests"
    def failed() -> int:  # answers the sidecar gave itself, and failures of the fallback
        st = v.envoy.stats("mcp_warden")
        return st.get("wasmcustom.mcp_warden.server.bench.degraded", 0) + sum(
            val for k, val in st.items() if k.startswith("wasmcustom.mcp_warden.cluster.upstream.failure."))

    for target in counts:
        sent_before = settle(v, requests)
        failed_before = failed()
        fill = wrk_pass(v.base_url, INITIALIZE, target - filled, "X-Bench-Session", "bench-session-%07d",
                        first=filled + 1, max_seconds=fill_seconds)
        # wrk keeps every connection busy: a few requests past the count are still in flight.
        # A fill cut by its time limit counts what reached the filter (ids are sent in order),
        # less the requests that may still have been in flight.
        reached = settle(v, requests) - sent_before
        n = target if fill["done"] else filled + max(0, reached - 64)
        fill["failed"] = failed() - failed_before  # sessions that were never created
        fill["reached"] = reached  # initialize requests that reached the filter (wrk may lose some)
        filled = n
        mem = memory(v)
        # Every id up to 10,000; past that an evenly spaced sample of 10,000 (bounded time).
        step = max(1, n // 10_000)
        asked = n // step
        # Asked twice: a lost record is missed both times (nothing records it again), while a
        # late request of the fill counted in the first pass is not.
        passes = []
        for _ in range(2):
            before = v.envoy.stat(DEAD_REJECTED)
            check = wrk_pass(v.base_url, TOOLS_CALL_SMALL, asked, "Mcp-Session-Id", "bench-session-%07d", step=step)
            settle(v, requests)
            passes.append(v.envoy.stat(DEAD_REJECTED) - before)
        missed = passes[-1]
        point = {"sessions": n, "target": target, "asked": asked, "fill": fill, "check": check, "missed": missed,
                 "missed_first_pass": passes[0],
                 "survival": round(1 - missed / asked, 5), "memory": mem}
        out["points"].append(point)
        log(f"  {n:,} sessions: filled in {fill['seconds']} s ({fill['non_200']} not 200), {missed:,} of {asked:,} asked missing "
            f"(survival {100 * point['survival']:.2f} %), allocated {mib(mem['allocated'])} MiB, RSS {mib(mem['rss'])} MiB")
    v.stop()
    return out


def servers_plugin(n: int, clusters: int) -> dict:
    return {
        "servers": [{"name": f"s{i:05d}", "match": {"authority": SERVERS_HOST % i}, "primary": f"c{i % clusters:03d}",
                     "fallbacks": [f"c{(i + 1) % clusters:03d}"]} for i in range(n)],
        "trust": {"aggregator_cluster": "aggregator", "token": "t", "sidecar": "bounds",
                  "poll_interval_ms": 1000, "report_interval_ms": 1000, "timeout_ms": 500},
    }


def servers_phase(wasm: Path, upstream_port: int, n: int, clusters: int, stack: contextlib.ExitStack,
                  list_seconds: int) -> dict:
    cluster_map = {f"c{i:03d}": ("127.0.0.1", upstream_port) for i in range(clusters)}
    cluster_map["aggregator"] = ("127.0.0.1", free_port())  # nothing listens: reports pile up
    cfg = bootstrap(listen_port=free_port(), admin_port=free_port(), clusters=cluster_map,
                    plugin=servers_plugin(n, clusters), wasm_path=wasm)
    t0 = time.monotonic()
    v = EnvoyVariant("servers", cfg).start(2, timeout=240)
    out = {"servers": n, "clusters": clusters, "ready_s": round(time.monotonic() - t0, 1), "loaded": memory(v)}
    stack.callback(v.stop)
    log(f"servers: {n:,} servers on {clusters} clusters ready in {out['ready_s']} s; "
        f"allocated {mib(out['loaded']['allocated'])} MiB, RSS {mib(out['loaded']['rss'])} MiB")
    status, hdrs = post(v.base_url, SERVERS_HOST % 0, TOOLS_LIST)
    if status != 200:
        raise RuntimeError(f"tools/list through the servers Envoy: {status}")
    out["lists"] = wrk_pass(v.base_url, TOOLS_LIST, n, "", "", host_fmt=SERVERS_HOST, first=0, conns=16,
                            max_seconds=list_seconds)
    # A pass cut by its time limit listed the first servers (in order), less those in flight.
    reached = sum(val for k, val in v.envoy.stats("mcp_warden.cluster.c").items() if k.endswith(".requests")) - 1
    out["listed_servers"] = n if out["lists"]["done"] else max(0, reached - 16)
    time.sleep(2.5)  # two report periods: the failed reports leave their signals pending
    out["listed"] = memory(v)
    stats = v.envoy.stats("mcp_warden")
    out["findings"] = sum(val for k, val in stats.items() if k.endswith(".security.findings"))
    out["stripped"] = sum(val for k, val in stats.items() if k.endswith(".security.stripped"))
    out["blocked"] = sum(val for k, val in stats.items() if k.endswith(".security.blocked"))
    log(f"  tools/list on {out['listed_servers']:,} servers in {out['lists']['seconds']} s; "
        f"allocated {mib(out['listed']['allocated'])} MiB, RSS {mib(out['listed']['rss'])} MiB")
    v.stop()
    return out


# ------------------------------------------------------------------------------------------------
# Report


def render(r: dict) -> str:
    s = r["sessions"]
    lines = [f"# mcp-warden bounds, {r['date']}", "",
             f"Machine: {r['machine']}; shared with other engineers' builds and tests.",
             f"Code: {r['code']}; `.wasm` {r['wasm_bytes']:,} bytes. Envoy 1.40.0 `--concurrency 2` (4 wasm VMs: "
             "2 on the main thread, 1 per worker). `bench/bounds.py`, {:.0f} s in all.".format(r["seconds"]), "",
             "## Sessions: records that survive, and what they cost", "",
             "Every session is live: created, then asked for twice after all were created (all of them "
             "at 10,000, an evenly spaced 10,000 past that); a lost record is missed in both passes, a late "
             "request of the fill only in the first. `allocated` is "
             "tcmalloc's (where shared data lives); `wasm` is the size and RSS of the VMs' linear memories, all VMs together.", "",
             "| distinct sessions | records found | Envoy allocated MiB | heap MiB | RSS MiB | wasm size / RSS MiB (VMs) |",
             "|---|---|---|---|---|---|"]
    idle = s["idle"]
    lines[-2] = lines[-2].replace("records found", "records found (second pass; first pass)")
    lines.append(f"| 0 (idle) | – | {mib(idle['allocated'])} | {mib(idle['heap_size'])} | {mib(idle['rss'])} | "
                 f"{wasm_cell(idle)} |")
    for p in s["points"]:
        m = p["memory"]
        cut = "" if p["sessions"] == p.get("target", p["sessions"]) else f" (of {p['target']:,} aimed at: fill time limit)"
        lines.append(f"| {p['sessions']:,}{cut} | {100 * p['survival']:.2f} % ({p['missed']:,} of {p['asked']:,} asked; {p.get('missed_first_pass', p['missed']):,}) | {mib(m['allocated'])} | "
                     f"{mib(m['heap_size'])} | {mib(m['rss'])} | {wasm_cell(m)} |")
    if s["points"]:
        last = s["points"][-1]
        per = (last["memory"]["allocated"] - idle["allocated"]) / last["sessions"]
        lines += ["", f"Envoy memory per session (allocated, idle to {last['sessions']:,}): about {per:,.0f} bytes "
                  f"(a record in its bucket plus the kept `initialize`, here {len(INITIALIZE)} bytes)."]
    v = r.get("servers")
    if v:
        lines += ["", f"## {v['servers']:,} servers on {v['clusters']} Envoy clusters", "",
                  f"Servers map onto {v['clusters']} Envoy clusters ({v['servers'] // v['clusters']} primaries each): the "
                  "filter's per-server state (stats, tool catalogs, pins, owners) is what grows with servers; "
                  "10,000 Envoy clusters would measure Envoy itself. The trust aggregator is down, so every report "
                  "fails and signals stay pending (capped per cluster).", "",
                  "| state | Envoy allocated MiB | heap MiB | RSS MiB | wasm size / RSS MiB (VMs) |", "|---|---|---|---|---|"]
        for label, key in [("loaded (ready after {} s)".format(v["ready_s"]), "loaded"),
                           (f"after one tools/list on {v['listed_servers']:,} servers ({v['lists']['seconds']} s)", "listed")]:
            m = v[key]
            lines.append(f"| {label} | {mib(m['allocated'])} | {mib(m['heap_size'])} | {mib(m['rss'])} | {wasm_cell(m)} |")
        lines += ["", f"Security findings {v['findings']:,} (stripped {v['stripped']:,}, blocked {v['blocked']:,}): "
                  "every server lists the same 100 tool names, so each is a shadowing finding after the first."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(BENCH.parent / "docs" / "results"))
    ap.add_argument("--wasm", default=str(WASM))
    ap.add_argument("--quick", action="store_true", help="10,000 sessions and 1,000 servers only")
    ap.add_argument("--phases", default="sessions,servers")
    ap.add_argument("--fill-seconds", type=int, default=100,
                    help="time limit of each fill (sessions, lists); a fill cut short is measured at the count it reached")
    args = ap.parse_args()
    wasm = Path(args.wasm)
    phases = set(args.phases.split(","))
    t0 = time.monotonic()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=BENCH).stdout.strip()
    n_servers = 1_000 if args.quick else 10_000
    r: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at start "
                   + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "code": f"commit {commit}" + (" with uncommitted changes" if dirty else ""),
        "wasm_bytes": wasm.stat().st_size,
    }
    with contextlib.ExitStack() as stack:
        hosts = [SERVERS_HOST % i for i in range(n_servers)] if "servers" in phases else []
        up, port = start_upstream(hosts)
        stack.callback(stop_process, up)
        r["sessions"] = sessions_phase(wasm, port, [10_000] if args.quick else [10_000, 100_000], stack,
                                       args.fill_seconds) \
            if "sessions" in phases else {"idle": {}, "points": []}
        if "servers" in phases:
            r["servers"] = servers_phase(wasm, port, n_servers, 100, stack, args.fill_seconds)
    r["seconds"] = time.monotonic() - t0
    text = render(r) if r["sessions"]["points"] else json.dumps(r, indent=1)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bounds-{r['date']}"
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    if r["sessions"]["points"]:
        stem.with_suffix(".md").write_text(text)
    log(f"wrote {stem}.md / .json")


if __name__ == "__main__":
    main()
