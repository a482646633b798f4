#!/usr/bin/env python3
"""What inspecting a `tools/list` answer adds (issue 5): `make bench-tools-list` (also run by
`make bench`).

The answer is 100 real tool definitions, the first 100 benign tools of
`core/tests/data/tool_corpus/benign.json` (GitHub's large schemas among them), served by a tiny
static HTTP/1.1 server (this script, `--serve`) that answers every POST with the same prebuilt
bytes, only the JSON-RPC id echoed: the upstream costs the same for every variant, so only the
proxy differs. Variants, each its own Envoy (1.40, `--concurrency 2`) on loopback:

* `direct`: the static server called directly (the floor, for reference);
* `baseline`: Envoy without the wasm filter;
* `warden`: Envoy + mcp-warden, inspection on (the default: the answer is held and inspected
  whole, tool definitions pinned, shadowing checked);
* `warden_noinspect`: Envoy + mcp-warden with `"inspection": {"enabled": false}`.

Sequential single requests on one kept-alive connection (no concurrency: the added latency of one
answer, not throughput), JSON (`/mcp`) and SSE framing (`/sse`). After a warm-up (V8 tier-up),
rounds of `--per-round` requests per variant in rotating order, so every variant is sampled across
the same minutes of a shared machine. Latency: client clock around request -> last byte read.
Envoy CPU per request: utime + stime of the Envoy process from /proc around each block.

Writes docs/results/bench-tools-list-YYYY-MM-DD.{md,json}. Bounded: about 1 to 2 minutes;
every process is started in its own session and stopped by PID.

    .venv/bin/python bench/tools_list.py [--rounds 10] [--per-round 50] [--out docs/results]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import report  # noqa: E402
from variants import AGENT_HOST, ROOT, WASM, EnvoyVariant, baseline_bootstrap, free_port, warden_bootstrap, warden_servers  # noqa: E402
from warden_testbed import stop_process  # noqa: E402

CORPUS = ROOT / "core" / "tests" / "data" / "tool_corpus" / "benign.json"
N_TOOLS = 100
VARIANTS = ["direct", "baseline", "warden", "warden_noinspect"]
FRAMINGS = {"json": "/mcp", "sse": "/sse"}
REQUEST = '{"jsonrpc":"2.0","id":%d,"method":"tools/list"}'
ID_RE = re.compile(rb'"id"\s*:\s*(\d+)')


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tools() -> list[dict]:
    corpus = json.loads(CORPUS.read_text())
    out = [e["tool"] for e in corpus["tools"] if e.get("label") == "benign"][:N_TOOLS]
    if len(out) != N_TOOLS:
        raise SystemExit(f"{CORPUS}: {len(out)} benign tools, {N_TOOLS} needed")
    return out


# ------------------------------------------------------------------------------------------------
# The static upstream (`--serve PORT`): prebuilt answers, keep-alive, nothing parsed but the id.


def serve(port: int) -> None:
    body = json.dumps({"tools": tools()}, separators=(",", ":")).encode()
    head, tail = b'{"jsonrpc":"2.0","id":', b',"result":' + body + b"}"

    def answer(path: bytes, rid: bytes) -> bytes:
        msg = head + rid + tail
        if path.startswith(b"/sse"):
            payload, ctype = b"event: message\ndata: " + msg + b"\n\n", b"text/event-stream"
        else:
            payload, ctype = msg, b"application/json"
        return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(payload)).encode() + b"\r\n\r\n" + payload)

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                hdr = await reader.readuntil(b"\r\n\r\n")
                path = hdr.split(b" ", 2)[1]
                m = re.search(rb"(?im)^content-length:\s*(\d+)", hdr)
                req = await reader.readexactly(int(m.group(1))) if m else b""
                rid = ID_RE.search(req)
                writer.write(answer(path, rid.group(1) if rid else b"null"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        srv = await asyncio.start_server(conn, "127.0.0.1", port)
        print(f"listening on 127.0.0.1:{port}, answer {len(tail) + len(head) + 1} bytes", flush=True)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


class Static:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening on" not in line:
            stop_process(self.proc)
            raise RuntimeError(f"static upstream did not start: {line!r}")
        self.answer_bytes = int(line.rsplit("answer ", 1)[1].split()[0])

    def stop(self) -> None:
        stop_process(self.proc)


# ------------------------------------------------------------------------------------------------
# The client: one kept-alive connection per variant, one request at a time.


class Client:
    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Host": AGENT_HOST, "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        self.next_id = 1

    def call(self, path: str) -> tuple[int, float, bytes, dict]:
        """(status, seconds, body, headers) of one tools/list."""
        self.next_id += 1
        body = REQUEST % self.next_id
        t0 = time.perf_counter()
        self.conn.request("POST", path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        dt = time.perf_counter() - t0
        return resp.status, dt, raw, {k.lower(): v for k, v in resp.getheaders()}

    def close(self) -> None:
        self.conn.close()


def check(name: str, client: Client, path: str) -> dict:
    status, _, raw, hdrs = client.call(path)
    text = raw.decode(errors="replace")
    if "text/event-stream" in hdrs.get("content-type", ""):
        text = next((ln[5:] for ln in text.splitlines() if ln.startswith("data:") and ln[5:].strip()), "")
    msg = json.loads(text) if text.strip() else None
    n = len(((msg or {}).get("result") or {}).get("tools", [])) if isinstance(msg, dict) else 0
    if status != 200 or n != N_TOOLS or msg.get("id") != client.next_id:
        raise RuntimeError(f"{name} {path}: status {status}, {n} tools, id {msg and msg.get('id')}: {text[:300]}")
    return {"variant": name, "path": path, "status": status, "tools": n, "bytes": len(raw),
            "content_type": hdrs.get("content-type", "")}


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=10, help="rounds over all variants (default 10)")
    ap.add_argument("--per-round", type=int, default=50, help="sequential requests per variant per round (default 50)")
    ap.add_argument("--warmup", type=int, default=100, help="requests per variant and framing before measuring (default 100)")
    ap.add_argument("--framings", default="json,sse", help="json, sse or both (default json,sse)")
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2, as the testbed)")
    ap.add_argument("--wasm", default=str(WASM), help="the filter to measure (default: the `make wasm` build)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    framings = [f.strip() for f in args.framings.split(",") if f.strip()]
    if set(framings) - set(FRAMINGS):
        raise SystemExit(f"unknown framings {framings} (known: {', '.join(FRAMINGS)})")
    wasm = Path(args.wasm)
    if not wasm.exists():
        raise SystemExit(f"{wasm} missing: run `make wasm`")

    started = time.monotonic()
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "source": report.source_state(),
        "wasm_bytes": wasm.stat().st_size,
        "wasm_default_build": wasm.resolve() == WASM.resolve(),
        "loadavg_start": loadavg(),
        "settings": {"rounds": args.rounds, "per_round": args.per_round, "warmup": args.warmup,
                     "envoy_concurrency": args.concurrency, "tools": N_TOOLS, "framings": framings},
    }
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], float] = {}
    with contextlib.ExitStack() as stack:
        up = Static()
        stack.callback(up.stop)
        dead = free_port()
        results["answer_bytes_json"] = up.answer_bytes
        log(f"static upstream on {up.port}: tools/list of {N_TOOLS} tools, {up.answer_bytes} bytes (JSON)")
        servers = {"servers": warden_servers("upstream", ["upstream_b"])}
        configs = {
            "baseline": baseline_bootstrap(up.port, dead),
            "warden": warden_bootstrap(up.port, dead, servers, wasm_path=wasm),
            "warden_noinspect": warden_bootstrap(up.port, dead, {**servers, "inspection": {"enabled": False}}, wasm_path=wasm),
        }
        pids = {"direct": up.proc.pid}
        urls = {"direct": f"http://127.0.0.1:{up.port}"}
        envoys: dict[str, EnvoyVariant] = {}
        for name, cfg in configs.items():
            envoys[name] = EnvoyVariant(name, cfg).start(args.concurrency)
            stack.callback(envoys[name].stop)
            pids[name], urls[name] = envoys[name].pid, envoys[name].base_url
        clients = {v: Client(urls[v]) for v in VARIANTS}
        for c in clients.values():
            stack.callback(c.close)
        results["sanity"] = [check(v, clients[v], FRAMINGS[f]) for v in VARIANTS for f in framings]
        log(f"sanity: {len(results['sanity'])} answers of {N_TOOLS} tools")
        for v in VARIANTS:
            for f in framings:
                for _ in range(args.warmup):
                    clients[v].call(FRAMINGS[f])
        log(f"warm-up done ({args.warmup} per variant and framing); load {loadavg()}")
        for r in range(args.rounds):
            k = r % len(VARIANTS)
            for v in VARIANTS[k:] + VARIANTS[:k]:
                for f in framings:
                    c0 = loadgen.group_cpu_seconds(pids[v])
                    xs = samples.setdefault((v, f), [])
                    for _ in range(args.per_round):
                        status, dt, _, _ = clients[v].call(FRAMINGS[f])
                        if status != 200:
                            raise RuntimeError(f"{v} {f}: status {status}")
                        xs.append(dt)
                    cpu[(v, f)] = cpu.get((v, f), 0.0) + loadgen.group_cpu_seconds(pids[v]) - c0
            log(f"  round {r + 1}/{args.rounds}, load {loadavg()}")
        results["warden_stats"] = {n: {k.rsplit("cluster.upstream.", 1)[1]: val
                                       for k, val in envoys[n].envoy.stats("mcp_warden.cluster.upstream.").items()
                                       if ".cluster.upstream." in k}
                                   for n in ("warden", "warden_noinspect")}
    results["loadavg_end"] = loadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    rows = []
    for f in framings:
        base = samples[("baseline", f)]
        for v in VARIANTS:
            xs = samples[(v, f)]
            row = {"variant": v, "framing": f, "n": len(xs),
                   **{f"p{p}_us": round(pct(xs, p) * 1e6) for p in (50, 90, 99)},
                   "mean_us": round(statistics.fmean(xs) * 1e6),
                   "cpu_us_per_req": round(cpu[(v, f)] / len(xs) * 1e6)}
            if v not in ("direct", "baseline"):
                row["added_p50_us"] = round((pct(xs, 50) - pct(base, 50)) * 1e6)
                row["added_p99_us"] = round((pct(xs, 99) - pct(base, 99)) * 1e6)
                row["added_mean_us"] = round((statistics.fmean(xs) - statistics.fmean(base)) * 1e6)
            rows.append(row)
    results["rows"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-tools-list-{results['date']}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    stem.with_suffix(".md").write_text(text)
    print(text)
    log(f"written: {stem.with_suffix('.md')} (+ .json) in {results['elapsed_s']:.0f} s")
    return 0


LABELS = {
    "direct": "static upstream, direct (reference)",
    "baseline": "(a) Envoy alone",
    "warden": "(b) Envoy + mcp-warden, inspection on",
    "warden_noinspect": "(c) Envoy + mcp-warden, inspection off",
}


def ms(us: int | None) -> str:
    return "" if us is None else f"{us / 1000:.2f}"


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        f"# `tools/list` of {s['tools']} tools through Envoy and mcp-warden, {res['date']}",
        "",
        f"`make bench-tools-list` (`bench/tools_list.py`). The answer: the first {s['tools']} benign tools of "
        f"`core/tests/data/tool_corpus/benign.json`, {res['answer_bytes_json']:,} bytes as JSON, served by a static "
        "HTTP/1.1 server that answers every POST with the same bytes (only the id echoed). One kept-alive "
        f"connection per variant, one request at a time; {s['warmup']} warm-up requests per variant and framing, then "
        f"{s['rounds']} rounds of {s['per_round']} requests per variant and framing in rotating order "
        f"({s['rounds'] * s['per_round']} samples each). Envoy `--concurrency {s['envoy_concurrency']}`. Latency on the "
        "client's clock (request sent -> last byte read; the Python client's own time is in every row); "
        "CPU = utime + stime of the Envoy process (of the static server for `direct`) per request.",
        "",
        f"Machine: {res['machine']}. Load average (1/5/15 min) at the end: {res['loadavg_end']}. "
        f"Commit {res['source']['commit']}"
        + (f", filter sources changed locally: {', '.join(res['source']['filter_sources_changed'])}"
           if res["source"]["filter_sources_changed"] and res.get("wasm_default_build", True) else "")
        + f"; filter {res['wasm_bytes']:,} bytes" + ("" if res.get("wasm_default_build", True) else " (`--wasm`: not the working tree's build)") + ".",
        "",
        "| framing | variant | p50 ms | p90 ms | p99 ms | mean ms | added p50 ms | added p99 ms | added mean ms | Envoy CPU µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['framing']} | {LABELS[r['variant']]} | {ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | "
                     f"{ms(r['mean_us'])} | {ms(r.get('added_p50_us'))} | {ms(r.get('added_p99_us'))} | "
                     f"{ms(r.get('added_mean_us'))} | {r['cpu_us_per_req']:,} |")
    st = res.get("warden_stats", {})
    lines += [
        "",
        "Added = the variant minus (a) Envoy alone, same framing and percentile. The same list answers every "
        "request, as in a mesh where every agent session lists the same server: the answer is held and read, its "
        "results hashed, and the filter's per-list decision cache answers after the first inspection. With inspection "
        "off the filter still reads every `tools/list` to learn the tools' retry hints (`readOnlyHint`, "
        "`idempotentHint`), without a cache, which is why (c) costs more than (b).",
        "",
        "mcp-warden counters at the end (`mcp_warden.cluster.upstream.*`): "
        + "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())
                                          if k.startswith("security.") or k in ("requests", "success"))
                    for n, c in st.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
