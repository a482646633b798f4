"""Signal ingestion throughput of the trust aggregator, and `GET /v1/scores` latency under it:
SQLite (one process), and 1 and 3 replicas on one PostgreSQL (Debian's server, started here by
testbed/postgres.py). A benchmark, not a test: it prints a Markdown table and writes
docs/results/aggregator-replicas-DATE.md.

    .venv/bin/python bench/aggregator_replicas.py [--seconds 10] [--writers 8] [--servers 50]

Writers post signal batches (unique ids, `--servers` servers each) round-robin over the replicas
on keep-alive connections; one reader polls `GET /v1/scores` round-robin meanwhile (no ETag: the
whole document each time). The aggregator binary is target/server/ if built (`make dist`), else
target/debug/ (say which in the results: debug is several times slower).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testbed"))

import warden_testbed  # noqa: E402
from postgres import Postgres  # noqa: E402
from warden_testbed import TESTBED_TOKENS, Aggregator  # noqa: E402

LOTS = {"per_second": 1_000_000, "burst": 1_000_000}
CONFIG = {"limits": {"rates": {r: LOTS for r in ("sidecar", "rater", "scanner", "operator", "reader",
                                                 "unauthenticated")}, "max_concurrent_requests": 256}}


def binary() -> Path:
    server = ROOT / "target" / "server" / "mcp-warden-aggregator"
    return server if server.exists() else warden_testbed.AGGREGATOR_BIN


class Conn:
    """One keep-alive connection per (thread, replica)."""

    def __init__(self, port: int):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.c.request(method, path, body=body, headers=headers)
            r = self.c.getresponse()
            r.read()
            return r.status
        except (OSError, http.client.HTTPException):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            return 0


def measure(replicas: list[Aggregator], seconds: float, writers: int, servers: int) -> dict:
    stop = threading.Event()
    acked = [0] * writers
    errors = [0] * writers
    latencies: list[float] = []

    def writer(k: int) -> None:
        conns = [Conn(r.port) for r in replicas]
        i = 0
        while not stop.is_set():
            body = json.dumps({"sidecar": f"pod-{k}", "batch_id": f"w{k}-{i}", "servers": [
                {"server": f"srv-{(k * 7 + i + j) % servers}", "outcomes": {"success": 10, "failures": {"http_5xx": 1}},
                 "latency": {"count": 11, "sum_ms": 250}} for j in range(3)]}).encode()
            status = conns[(i + k) % len(conns)].request("POST", "/v1/signals", body, "sidecar-1-token-testbed")
            i += 1
            if status == 200:
                acked[k] += 1
            else:
                errors[k] += 1

    def reader() -> None:
        conns = [Conn(r.port) for r in replicas]
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            status = conns[i % len(conns)].request("GET", "/v1/scores", None, "reader-token-testbed")
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            i += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)] + [threading.Thread(target=reader)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    return {"batches_per_s": sum(acked) / elapsed, "errors": sum(errors), "reads": len(latencies),
            "scores_p50_ms": q[49] * 1000, "scores_p99_ms": q[98] * 1000}


def run(label: str, replicas: list[Aggregator], args) -> dict:
    try:
        for r in replicas:
            r.start()
        result = measure(replicas, args.seconds, args.writers, args.servers)
    finally:
        for r in replicas:
            r.stop()
    result["setup"] = label
    print(f"{label}: {result['batches_per_s']:.0f} batches/s ({result['errors']} errors), GET /v1/scores "
          f"p50 {result['scores_p50_ms']:.1f} ms, p99 {result['scores_p99_ms']:.1f} ms over {result['reads']} reads",
          flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--servers", type=int, default=50)
    args = ap.parse_args()
    warden_testbed.AGGREGATOR_BIN = binary()
    print(f"aggregator: {warden_testbed.AGGREGATOR_BIN}; {args.writers} writers, {args.seconds:.0f} s per setup, "
          f"3 servers per batch out of {args.servers}", flush=True)
    results = [run("SQLite, 1 process", [Aggregator(config=CONFIG, tokens=list(TESTBED_TOKENS))], args)]
    pg = Postgres().start()
    try:
        for n in (1, 3):
            url = pg.create_database(f"bench_{n}")
            results.append(run(f"PostgreSQL, {n} replica{'s' if n > 1 else ''}",
                               [Aggregator(config=CONFIG, tokens=list(TESTBED_TOKENS), db_url=url) for _ in range(n)],
                               args))
    finally:
        pg.stop()
    day = datetime.date.today().isoformat()
    lines = [f"# Aggregator replicas: signal ingestion and `GET /v1/scores` under it ({day})", "",
             f"`bench/aggregator_replicas.py --seconds {args.seconds:g} --writers {args.writers} --servers "
             f"{args.servers}`; binary `{warden_testbed.AGGREGATOR_BIN.relative_to(ROOT)}`; PostgreSQL 15 (Debian) "
             "on the same 2-core machine as the replicas and the load generator; load average at the end "
             f"{os.getloadavg()[0]:.1f} (other work shares the machine: compare rows of one run).", "",
             "| setup | signal batches/s | errors | `GET /v1/scores` p50 | p99 |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['setup']} | {r['batches_per_s']:.0f} | {r['errors']} | {r['scores_p50_ms']:.1f} ms "
                     f"| {r['scores_p99_ms']:.1f} ms |")
    out = ROOT / "docs" / "results" / f"aggregator-replicas-{day}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
