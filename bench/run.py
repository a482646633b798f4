#!/usr/bin/env python3
"""`make bench`: what mcp-warden costs in front of a fast MCP server, side by side with the
same Envoy without the filter, the upstream called directly, and ContextForge.

Phases, all in one run so every ratio compares numbers taken minutes apart on the same machine:

1. the matrix: 4 workloads x 1/16/64 connections x {saturation (wrk), fixed rate (oha)} x
   {direct, baseline, warden, native, warden_open, contextforge}, variants interleaved per cell
   (`native`: the same filter as an Envoy dynamic module, `make native`);
2. added latency: baseline, warden and native alternated, 3 rounds, at 1 and 16 connections;
3. scale: 1 / 100 / 10,000 configured servers; 1 / 10,000 / 100,000 distinct sessions;
4. profile: probe filters that add one host mechanism at a time (bench/probe-filter), and a
   perf split of Envoy's CPU by shared object;
5. plugin load time (Envoy start -> /ready, with and without the filter, alternated).

Writes docs/results/bench-YYYY-MM-DD.{md,json,png}. Every load run is bounded by its
duration; every process is started in its own session and stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
from loadgen import Target, Workload  # noqa: E402
from variants import (  # noqa: E402
    AGENT_HOST, LONG_OPEN_MS, PROBE_WASM, ROOT, SCALE_HOST, WASM, ContextForge, EnvoyVariant, Upstream,
    baseline_bootstrap, free_port, http_json, probe_plugin, scale_servers, warden_bootstrap, warden_servers,
)
import report  # noqa: E402

TOOLS_CALL = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":{}}}'
WORKLOADS = [
    Workload("call_small", "/mcp", TOOLS_CALL % "small", "tools/call, small JSON answer (91 B)"),
    Workload("call_10k", "/mcp", TOOLS_CALL % "big", "tools/call, 10 KB JSON answer"),
    Workload("call_sse", "/sse", TOOLS_CALL % "small", "tools/call, SSE answer"),
    Workload("list_100", "/mcp", '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', "tools/list, 100 tools (21 KB)"),
]
CONNS = [1, 16, 64]
ENVOY_VARIANTS = ["baseline", "warden", "native", "warden_open"]
PHASES = ["matrix", "latency", "servers", "sessions", "profile", "perf", "load"]
RATE_FRACTION = 0.4  # the fixed offered rate: this share of the slowest Envoy variant's saturation
# (0.4, not more: on a shared 2-core machine saturation moves by 10-20 % from one minute to the next)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nice_rate(x: float) -> int:
    """Rounds down to two significant digits (a rate people can read and compare)."""
    if x < 10:
        return max(1, int(x))
    p = 10 ** (int(math.log10(x)) - 1)
    return int(x // p * p)


# ------------------------------------------------------------------------------------------------
# Checks before measuring


def call_once(target: Target, w: Workload, timeout: float = 30.0) -> tuple[int, dict, object]:
    """(status, headers, JSON-RPC message) of one request; SSE answers are read to their data line."""
    host, port = target.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {**target.headers(), "Host": target.host}
        conn.request("POST", target.path_prefix + target.path_map.get(w.path, w.path), body=target.body(w), headers=headers)
        resp = conn.getresponse()
        raw = resp.read().decode(errors="replace")
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    msg: object = None
    if "text/event-stream" in hdrs.get("content-type", ""):
        for line in raw.splitlines():
            if line.startswith("data:") and line[5:].strip():
                with contextlib.suppress(ValueError):
                    msg = json.loads(line[5:])
    else:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw)
    return resp.status, hdrs, msg


def check_answer(name: str, target: Target, w: Workload, served_by: str | None) -> dict:
    status, hdrs, msg = call_once(target, w)
    ok = status == 200 and isinstance(msg, dict) and "result" in msg
    detail = f"{name} {w.name}: status {status}"
    if ok:
        result = msg["result"]
        if w.name == "list_100":
            ok = len(result.get("tools", [])) == 100
            detail += f", {len(result.get('tools', []))} tools"
        else:
            ok = not result.get("isError") and bool(result.get("content"))
            text = (result.get("content") or [{}])[0].get("text", "")
            detail += f", text {len(text)} chars"
            if w.name == "call_10k":
                ok = ok and len(text) >= 10 * 1024
    if served_by is not None:
        got = hdrs.get("x-mcp-warden-served-by")
        detail += f", served by {got}"
        ok = ok and got == served_by
    if not ok:
        raise RuntimeError(f"sanity check failed: {detail}: {str(msg)[:300]}")
    return {"ok": True, "detail": detail, "content_type": hdrs.get("content-type", "")}


def trip(variant: EnvoyVariant, target: Target, limit: int = 50) -> int:
    """Sends calls until the dead primary's breaker is open and the fallback serves (bounded)."""
    w = WORKLOADS[0]
    for n in range(1, limit + 1):
        _, hdrs, msg = call_once(target, w)
        if hdrs.get("x-mcp-warden-served-by") == "upstream" and isinstance(msg, dict) and "result" in msg:
            state = variant.envoy.stat("wasmcustom.mcp_warden.cluster.dead.breaker.state")
            if state == 1:
                return n - 1
    raise RuntimeError(f"the dead primary's breaker did not open within {limit} calls")


# ------------------------------------------------------------------------------------------------
# Measuring


class Bench:
    def __init__(self, args):
        self.args = args
        self.cells: list[dict] = []
        self.pgid: dict[str, int] = {}  # variant -> process group whose CPU counts
        self.targets: dict[str, Target] = {}
        self.upstream_pgid = 0

    def measure(self, phase: str, variant: str, w: Workload, conns: int, mode: str, seconds: float,
                rate: float | None = None, sessions: int = 0, target: Target | None = None, pgid: int | None = None) -> dict:
        target = target or self.targets[variant]
        pgid = pgid if pgid is not None else self.pgid.get(variant)
        cpu0 = loadgen.group_cpu_seconds(pgid) if pgid else None
        up0 = loadgen.group_cpu_seconds(self.upstream_pgid)
        t0 = time.monotonic()
        try:
            if mode == "saturation":
                r = loadgen.run_wrk(target, w, conns, seconds, sessions=sessions)
            else:
                r = loadgen.run_oha(target, w, conns, seconds, rate or 1)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            r = {"error": str(e)[:500], "rps": 0.0, "requests": 0, "errors": None}
        wall = time.monotonic() - t0
        cpu1 = loadgen.group_cpu_seconds(pgid) if pgid else None
        up1 = loadgen.group_cpu_seconds(self.upstream_pgid)
        done = r.get("requests") or 0
        cell = {
            "phase": phase, "variant": variant, "workload": w.name, "conns": conns, "mode": mode,
            "sessions": sessions, **{k: v for k, v in r.items() if k != "percentiles"},
            "percentiles": r.get("percentiles", []),
            "proxy_cpu_s": None if cpu0 is None else round(cpu1 - cpu0, 3),
            "proxy_cpu_us_per_req": None if cpu0 is None or not done else round((cpu1 - cpu0) / done * 1e6, 1),
            "upstream_cpu_us_per_req": None if not done else round((up1 - up0) / done * 1e6, 1),
            "wall_s": round(wall, 2),
            "loadavg_1m": _loadavg(),
        }
        self.cells.append(cell)
        p50 = cell.get("p50_us")
        p99 = cell.get("p99_us")
        log(f"  {phase:8} {variant:14} {w.name:10} c={conns:<3} {mode:10} "
            f"{cell['rps']:9.1f} rps  p50 {p50 or 0:9.0f} us  p99 {p99 or 0:9.0f} us  "
            f"cpu {cell['proxy_cpu_us_per_req'] or 0:7.1f} us/req  err {cell.get('errors')}")
        return cell


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "3")),
                    help="length of each saturation cell and latency-round cell (default 3)")
    ap.add_argument("--matrix-seconds", type=float, default=float(os.environ.get("BENCH_MATRIX_SECONDS", "2")),
                    help="length of each saturation cell of the matrix (default 2)")
    ap.add_argument("--rate-seconds", type=float, default=float(os.environ.get("BENCH_RATE_SECONDS", "2")),
                    help="length of each fixed-rate cell of the matrix and the scale runs (default 2)")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", "510")),
                    help="seconds after which optional repetitions are skipped (default 510)")
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2, as the testbed)")
    ap.add_argument("--no-contextforge", action="store_true", help="leave ContextForge out")
    ap.add_argument("--phases", default=os.environ.get("BENCH_PHASES", ",".join(PHASES)),
                    help=f"comma-separated subset of {','.join(PHASES)} (default: all; perf only within the budget)")
    ap.add_argument("--quick", action="store_true", help="smoke test: one workload, 16 connections, short cells")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if phases - set(PHASES):
        raise SystemExit(f"unknown phases: {sorted(phases - set(PHASES))} (known: {', '.join(PHASES)})")
    if "matrix" not in phases:
        args.no_contextforge = True
    if args.quick:
        args.seconds = min(args.seconds, 1)
        args.rate_seconds = min(args.rate_seconds, 1)
        args.matrix_seconds = min(args.matrix_seconds, 1)
    if not loadgen.oha_available():
        raise SystemExit("oha missing: `make bench` installs it under bench/.tools (cargo install oha)")
    if not WASM.exists() or not PROBE_WASM.exists():
        raise SystemExit("filter or probe .wasm missing: run `make bench` (it builds both)")

    started = time.monotonic()
    skipped: list[str] = []

    def within_budget(what: str) -> bool:
        if time.monotonic() - started < args.budget:
            return True
        skipped.append(what)
        log(f"  over the {args.budget:.0f} s budget: skipping {what}")
        return False

    bench = Bench(args)
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "settings": {"cell_seconds": args.seconds, "matrix_cell_seconds": args.matrix_seconds, "rate_cell_seconds": args.rate_seconds,
                     "envoy_concurrency": args.concurrency, "rate_fraction": RATE_FRACTION,
                     "load_generators": report.tool_versions()},
        "wasm_bytes": WASM.stat().st_size,
        "source": report.source_state(),
        "probe_wasm_bytes": PROBE_WASM.stat().st_size,
        "skipped": skipped,
        "phases": sorted(phases),
        "rates": {},
    }
    workloads = WORKLOADS[:1] if args.quick else WORKLOADS
    conns_list = [16] if args.quick else CONNS
    small = WORKLOADS[0]
    rounds = 1 if args.quick else 2

    with contextlib.ExitStack() as stack:
        upstream = Upstream().start()
        stack.callback(upstream.stop)
        bench.upstream_pgid = upstream.proc.pid
        dead_port = free_port()  # nothing listens there: the warden_open primary
        log(f"upstream (rmcp) on {upstream.port}; dead primary port {dead_port}")

        cf = None
        cf_reason = ""
        if not args.no_contextforge:
            ok, cf_reason = ContextForge.available()
            if ok:
                cf = ContextForge(upstream.port).spawn()  # boots (~30 s) while the Envoys start
                stack.callback(cf.stop)
        else:
            cf_reason = "left out (--no-contextforge)"

        # -- the long-running variants ---------------------------------------------------------
        configs = {
            "baseline": baseline_bootstrap(upstream.port, dead_port),
            "warden": warden_bootstrap(upstream.port, dead_port, {"servers": warden_servers("upstream", ["upstream_b"])}),
            "native": warden_bootstrap(upstream.port, dead_port, {"servers": warden_servers("upstream", ["upstream_b"])},
                                       host="native"),
            "warden_open": warden_bootstrap(upstream.port, dead_port, {
                "servers": warden_servers("dead", ["upstream"]),
                "clusters": {"dead": {"breaker": {"open_duration_ms": LONG_OPEN_MS, "open_duration_max_ms": LONG_OPEN_MS}}},
            }),
        }
        envoys: dict[str, EnvoyVariant] = {}
        for name, cfg in configs.items():
            envoys[name] = EnvoyVariant(name, cfg).start(args.concurrency)
            stack.callback(envoys[name].stop)
            bench.pgid[name] = envoys[name].pid
            bench.targets[name] = Target(envoys[name].base_url, AGENT_HOST)
        bench.targets["direct"] = Target(f"http://127.0.0.1:{upstream.port}", AGENT_HOST)
        bench.pgid["direct"] = upstream.proc.pid
        results["trip_calls"] = trip(envoys["warden_open"], bench.targets["warden_open"])
        log(f"warden_open: dead primary's breaker open after {results['trip_calls']} calls; traffic on the fallback")

        if cf:
            try:
                cf.wait_and_register()
                prefix = {path: cf.tool_prefix(path) for path in ("/mcp", "/sse")}
                bench.targets["contextforge"] = Target(
                    cf.base_url, f"127.0.0.1:{cf.port}",
                    extra_headers={"Authorization": f"Bearer {cf.token}"},
                    path_map=cf.target_paths(),
                    body_map={w.name: w.body.replace('"name":"', '"name":"' + prefix[w.path], 1) if "tools/call" in w.body else w.body
                              for w in WORKLOADS},
                )
                bench.pgid["contextforge"] = cf.pid
                results["contextforge"] = {"ready_s": round(cf.ready_s, 1), "env": cf.env_public(),
                                           "circuit_breaker_check": cf.breaker_check}
                log(f"ContextForge up after {cf.ready_s:.0f} s; {cf.breaker_check[:80]}")
            except (RuntimeError, TimeoutError, OSError, KeyError, StopIteration) as e:
                cf_reason = f"started but could not be set up: {e}"[:800]
                log(f"ContextForge left out: {cf_reason}")
                cf.stop()
                cf = None
        if not cf:
            results["contextforge"] = {"left_out": cf_reason}

        variants = ["direct"] + ENVOY_VARIANTS + (["contextforge"] if cf else [])
        served = {"warden": "upstream", "native": "upstream", "warden_open": "upstream"}
        results["sanity"] = [check_answer(v, bench.targets[v], w, served.get(v)) for v in variants for w in WORKLOADS]
        log(f"sanity: {len(results['sanity'])} answers checked")
        for v in variants:  # warm-up: connections, V8 tier-up of the filter's hot code
            if v != "contextforge":
                loadgen.run_wrk(bench.targets[v], small, 16, 1)
        results["memory_idle"] = {n: e.memory() for n, e in envoys.items()}

        # -- 1. the matrix ---------------------------------------------------------------------
        if "matrix" in phases:
            log("matrix: saturation (wrk) then fixed rate (oha), variants in rotating order")
            k = 0
            for w in workloads:
                for conns in conns_list:
                    sat: dict[str, dict] = {}
                    for v in rotate(variants, k):
                        if v == "contextforge" and (conns > 16 or (conns > 1 and w is not small)):
                            continue  # 0.1-0.4 s per call: 64 connections only time out; 16 once is enough
                        # At 16 connections its answers take seconds: a short cell would end before most.
                        secs = max(args.seconds, 8.0) if v == "contextforge" and conns > 1 and not args.quick else args.matrix_seconds
                        sat[v] = bench.measure("matrix", v, w, conns, "saturation", secs)
                    k += 1
                    rate = nice_rate(RATE_FRACTION * min(sat[v]["rps"] for v in ENVOY_VARIANTS))
                    results["rates"][f"{w.name}/{conns}"] = rate
                    for v in rotate(variants, k):
                        if v == "contextforge":
                            if conns > 1:
                                continue
                            r = nice_rate(RATE_FRACTION * max(sat[v]["rps"], 2.5))
                            bench.measure("matrix", v, w, conns, "fixed_rate", max(args.rate_seconds, 4.0), rate=r)
                        else:
                            bench.measure("matrix", v, w, conns, "fixed_rate", args.rate_seconds, rate=rate)
                    k += 1
            results["memory_after"] = {n: e.memory() for n, e in envoys.items()}
            results["warden_open_counters"] = {
                "dead_rejected": envoys["warden_open"].envoy.stat("wasmcustom.mcp_warden.cluster.dead.rejected"),
                "fallback_served": envoys["warden_open"].envoy.stat("wasmcustom.mcp_warden.cluster.upstream.fallback"),
                "dead_breaker_state": envoys["warden_open"].envoy.stat("wasmcustom.mcp_warden.cluster.dead.breaker.state"),
            }
            results["warden_counters"] = {
                "success": envoys["warden"].envoy.stat("wasmcustom.mcp_warden.cluster.upstream.success"),
                "requests": envoys["warden"].envoy.stat("wasmcustom.mcp_warden.cluster.upstream.requests"),
            }
            # The same counters of the native module (Envoy.stat reads them under the wasm names).
            results["native_counters"] = {
                "success": envoys["native"].envoy.stat("wasmcustom.mcp_warden.cluster.upstream.success"),
                "requests": envoys["native"].envoy.stat("wasmcustom.mcp_warden.cluster.upstream.requests"),
            }
            if cf:
                cf.stop()  # its background work would disturb what follows

        # -- 2. added latency, repeated --------------------------------------------------------
        if "latency" in phases:
            log("added latency: baseline, warden and native alternated, 3 rounds per condition")
            conditions = [(1, 200), (16, results["rates"].get("call_small/16", 400))]
            results["latency_conditions"] = conditions
            for r_ in range(1 if args.quick else 3):
                for conns, rate in conditions:
                    for v in rotate(["baseline", "warden", "native"], r_):
                        bench.measure("latency", v, small, conns, "fixed_rate", args.seconds, rate=rate)

        # -- 3a. scale: configured servers -----------------------------------------------------
        if "servers" in phases:
            log("scale: configured servers (the called server is last in the list; and first, for 10,000)")
            scale_cfgs = [("servers_1", 1, False), ("servers_100", 100, False), ("servers_10000", 10_000, False),
                          ("servers_10000_first", 10_000, True)]
            if args.quick:
                scale_cfgs = [scale_cfgs[0], scale_cfgs[2]]
            scale_envoys: dict[str, EnvoyVariant] = {}
            results["scale_servers"] = {}
            for name, n, first in scale_cfgs:
                plugin = {"servers": scale_servers(n, target_first=first)}
                cfg = warden_bootstrap(upstream.port, dead_port, plugin)
                v = EnvoyVariant(name, cfg).start(args.concurrency, timeout=300, log_level="info")
                stack.callback(v.stop)
                scale_envoys[name] = v
                bench.pgid[name] = v.pid
                bench.targets[name] = Target(v.base_url, SCALE_HOST)
                check_answer(name, bench.targets[name], small, "upstream")
                loadgen.run_wrk(bench.targets[name], small, 16, 1)
                results["scale_servers"][name] = {"servers": n, "target_first": first, "ready_s": round(v.ready_s, 3),
                                                  "load": v.log_milestones(),
                                                  "plugin_config_bytes": len(json.dumps(plugin)), "memory": v.memory()}
                log(f"  {name}: ready in {v.ready_s:.2f} s, rss {v.memory()['rss'] / 2**20:.0f} MiB")
            names = ["baseline"] + list(scale_envoys)
            sat = {}
            for r_ in range(rounds):
                if r_ and not within_budget("scale servers, round 2"):
                    break
                for name in rotate(names, r_):
                    sat.setdefault(name, []).append(bench.measure("servers", name, small, 16, "saturation", args.seconds))
            rate = nice_rate(RATE_FRACTION * min(min(c["rps"] for c in sat[n]) for n in names))
            results["rates"]["servers"] = rate
            for name in rotate(names, 1):
                bench.measure("servers", name, small, 16, "fixed_rate", args.rate_seconds, rate=rate)
            for v in scale_envoys.values():
                v.stop()

        # -- 3b. scale: sessions ---------------------------------------------------------------
        if "sessions" in phases:
            # Sessions the filter tracks: an `initialize` whose answer carries a session id is
            # recorded with the cluster that created it (shared data, a fixed table of slots), and the
            # session's later requests go to that cluster first. The fill sends one `initialize` per
            # id through warden_open (traffic on the fallback; the upstream answers `x-bench-session`
            # as the new session's id); the measurement then cycles through the ids as
            # `Mcp-Session-Id`. A request whose record is found goes straight to the fallback; one
            # whose record was overwritten by a later session in its slot asks the dead primary's
            # breaker first (counted in `dead.rejected`).
            log("scale: sessions pinned by mcp-warden (1, 10,000, 100,000), through warden_open")
            results["sessions_fill"] = {}
            dead_rejected = "wasmcustom.mcp_warden.cluster.dead.rejected"
            for n in ([1, 10_000] if args.quick else [1, 10_000, 100_000]):
                fill = loadgen.run_fill(bench.targets["warden_open"], small, 64, n, max_seconds=60)
                results["sessions_fill"][str(n)] = fill
                log(f"  sent {n} new sessions through warden_open in {fill['seconds']} s (all answered: {fill['filled']})")
                for r_ in range(rounds):
                    if r_ and not within_budget(f"sessions {n}, round 2"):
                        break
                    for v in rotate(["baseline", "warden_open"], r_ + n):
                        before = envoys["warden_open"].envoy.stat(dead_rejected)
                        cell = bench.measure("sessions", v, small, 16, "saturation", args.seconds, sessions=n)
                        if v == "warden_open" and cell.get("requests"):
                            cell["pin_missed_share"] = round((envoys["warden_open"].envoy.stat(dead_rejected) - before) / cell["requests"], 4)

        # -- 4. profile: what each host mechanism costs ----------------------------------------
        if "profile" in phases:
            log("profile: probe filters adding one mechanism at a time")
            probes = {
                "probe_route": probe_plugin(),
                "probe_hold": probe_plugin(hold_request_body=True, read_headers=8),
                "probe_inspect": probe_plugin(hold_request_body=True, read_headers=8, inspect_response=True),
                "probe_shared": probe_plugin(hold_request_body=True, read_headers=8, inspect_response=True,
                                             shared_data_ops=3, metrics=4),
                "probe_json": probe_plugin(hold_request_body=True, read_headers=8, inspect_response=True,
                                           shared_data_ops=3, metrics=4, parse_json=True),
            }
            results["probes"] = probes
            # mcp-warden itself with features switched off, to split its own cost.
            servers = warden_servers("upstream", ["upstream_b"])
            wardens = {
                "warden_bare": {"servers": servers, "inspection": {"enabled": False},
                                "failover": {"retry": False, "move_sessions": False, "upstream_timeout_ms": 0,
                                             "hold_json_answers": False}},
                "warden_no_inspection": {"servers": servers, "inspection": {"enabled": False}},
            }
            results["warden_profile_variants"] = wardens
            probe_envoys = {}
            for name, plugin in [*probes.items(), *wardens.items()]:
                cfg = warden_bootstrap(upstream.port, dead_port, plugin, wasm_path=PROBE_WASM if name in probes else WASM)
                v = EnvoyVariant(name, cfg).start(args.concurrency)
                stack.callback(v.stop)
                probe_envoys[name] = v
                bench.pgid[name] = v.pid
                bench.targets[name] = Target(v.base_url, AGENT_HOST)
                loadgen.run_wrk(bench.targets[name], small, 16, 1)
            results["memory_probe"] = {n: e.memory() for n, e in probe_envoys.items()}
            names = ["baseline", *probes, *wardens, "warden"]
            for r_ in range(rounds):
                if r_ and not within_budget("profile, round 2"):
                    break
                for name in (names if r_ % 2 == 0 else list(reversed(names))):
                    bench.measure("profile", name, small, 16, "saturation", args.seconds)
            if "perf" in phases and loadgen.perf_available() and within_budget("perf split"):
                # Where the CPU goes, by shared object, under the same saturation load (perf adds a
                # little overhead, so these cells are apart from the clean ones above).
                results["perf"] = {}
                for name in ("baseline", "probe_route", "warden"):
                    data = Path(tempfile.mkdtemp(prefix="mcp-bench-perf-")) / "perf.data"
                    rec = loadgen.perf_record(bench.pgid[name], max(1.0, args.seconds - 1), data)
                    cell = bench.measure("perf", name, small, 16, "saturation", args.seconds)
                    if rec:
                        rec.wait(args.seconds + 30)
                    shares = loadgen.perf_dso_shares(data) if data.exists() else {}
                    cpu = cell.get("proxy_cpu_us_per_req") or 0
                    results["perf"][name] = {"shares": shares, "us_per_req": {k_: round(v_ * cpu, 2) for k_, v_ in shares.items()}}
                    with contextlib.suppress(OSError):
                        data.unlink()
                        data.parent.rmdir()
                log(f"  perf: { {n: r['us_per_req'] for n, r in results['perf'].items()} }")
            for v in probe_envoys.values():
                v.stop()

        # -- 5. plugin load time (last: nothing else starts or runs meanwhile) -----------------
        if "load" in phases:
            log("plugin load time: Envoy start -> /ready, alternating without and with the filter")
            load = {"baseline": [], "warden": [], "probe_route": []}
            milestones = []
            for _ in range(1 if args.quick else 3):
                for name, cfg in (("baseline", baseline_bootstrap(upstream.port, dead_port)),
                                  ("warden", warden_bootstrap(upstream.port, dead_port, {"servers": warden_servers("upstream", ["upstream_b"])})),
                                  ("probe_route", warden_bootstrap(upstream.port, dead_port, probe_plugin(), wasm_path=PROBE_WASM))):
                    v = EnvoyVariant(name, cfg).start(args.concurrency, log_level="info")
                    load[name].append(round(v.ready_s, 3))
                    if name == "warden":
                        milestones.append(v.log_milestones())
                    v.stop()
            results["load_time_s"] = load
            results["load_milestones"] = milestones
            log(f"  {load} {milestones}")

    results["cells"] = bench.cells
    results["loadavg_end"] = _loadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench-{results['date']}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    plot_ok = report.plot(stem.with_suffix(".json"), stem.with_suffix(".png"))
    text = report.markdown(results, png_name=stem.with_suffix(".png").name if plot_ok else None)
    stem.with_suffix(".md").write_text(text)
    print(text)
    log(f"written: {stem.with_suffix('.md')} (+ .json, .png, -throughput.png) in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
