#!/usr/bin/env python3
"""The aggregator's mesh-wide scan: how many tool definitions per second it scans
(`make bench-mesh-scan`).

A real aggregator (the release binary, SQLite, `--release` build) on loopback receives
`POST /v1/definitions` batches of 256 definitions, as sidecars send them: the real tool
definitions and attacks of `corpus/data/{dev,test}.jsonl`, each repeated with a numbered suffix in
its description so that every definition is a new fingerprint. Measured:

* `new`: every definition unseen: fingerprint, the core's rules and detector, one SQLite commit
  (fsync) per batch, a new scores document when a verdict appears;
* `known`: the same batches again: fingerprint and look-up only (each is scanned once).

Scans per second = definitions in the batches / wall time of the sequential POSTs (one client,
one connection at a time: the engine is one writer). Prints the figures and writes
docs/results/mesh-scan-YYYY-MM-DD.md. Bounded: `--definitions` (default 10,240), about 10 to 30 s;
the aggregator is started in its own session and stopped by PID.

    .venv/bin/python bench/mesh_scan.py [--definitions 10240] [--out docs/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testbed"))
import warden_testbed  # noqa: E402
from warden_testbed import Aggregator, http_json  # noqa: E402

BATCH = 256
RELEASE_BIN = ROOT / "target" / "release" / "mcp-warden-aggregator"
LOTS = {"per_second": 1_000_000.0, "burst": 1_000_000}


def corpus_tools() -> list[dict]:
    """The corpus's distinct tool definitions (some appear in several rows)."""
    tools, seen = [], set()
    for name in ("dev.jsonl", "test.jsonl"):
        for line in (ROOT / "corpus" / "data" / name).read_text().splitlines():
            row = json.loads(line)
            tool = row.get("tool")
            key = json.dumps(tool, sort_keys=True)
            if isinstance(tool, dict) and isinstance(tool.get("name"), str) and key not in seen:
                seen.add(key)
                tools.append(tool)
    return tools


def definitions(n: int) -> list[dict]:
    """`n` distinct definitions: corpus tools, each copy with a numbered suffix."""
    base = corpus_tools()
    out, seen, i = [], set(), 0
    while len(out) < n:
        t = dict(base[i % len(base)])
        t["description"] = f"{t.get('description') or ''} (copy {i // len(base)})"
        i += 1
        # Distinct as the fingerprint sees them (the top-level `_meta` is left out).
        key = json.dumps({k: v for k, v in t.items() if k != "_meta"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"server": f"bench_{len(out) % 50}", "definition": t})
    return out


def post_all(agg: Aggregator, defs: list[dict]) -> tuple[float, list[float], int, int]:
    """Sends `defs` in batches; (seconds, per-batch seconds, scanned, known)."""
    per_batch, scanned, known = [], 0, 0
    start = time.perf_counter()
    for i in range(0, len(defs), BATCH):
        t0 = time.perf_counter()
        status, _, ack = http_json("POST", f"{agg.url}/v1/definitions", {"definitions": defs[i:i + BATCH]},
                                   {"Authorization": "Bearer sidecar-1-token-testbed"}, timeout=60)
        per_batch.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"POST /v1/definitions answered {status}: {ack}")
        scanned += ack["scanned"]
        known += ack["known"]
    return time.perf_counter() - start, per_batch, scanned, known


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--definitions", type=int, default=10_240)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = ap.parse_args()
    if not RELEASE_BIN.exists():
        print(f"{RELEASE_BIN} is missing: cargo build --release -p mcp-warden-aggregator --bins", file=sys.stderr)
        return 2
    warden_testbed.AGGREGATOR_BIN = RELEASE_BIN
    defs = definitions(args.definitions)
    roles = ("sidecar", "rater", "scanner", "operator", "reader", "unauthenticated")
    agg = Aggregator(config={"limits": {"rates": {r: LOTS for r in roles}}}).start()
    try:
        new_s, new_batches, scanned, _ = post_all(agg, defs)
        known_s, known_batches, _, known = post_all(agg, defs)
        _, _, doc = http_json("GET", f"{agg.url}/v1/scores", None, {"Authorization": "Bearer reader-token-testbed"})
        verdicts = len(doc.get("verdicts", []))
    finally:
        agg.stop()
    if scanned != len(defs) or known != len(defs):
        print(f"expected {len(defs)} scanned then known, got {scanned} and {known}", file=sys.stderr)
        return 1
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    rows = [
        ("new (scanned)", len(defs) / new_s, ms(new_batches)),
        ("known (looked up)", len(defs) / known_s, ms(known_batches)),
    ]
    cpu = os.cpu_count()
    lines = [
        f"# Mesh-wide scan: aggregator scans per second ({datetime.date.today()})",
        "",
        f"`bench/mesh_scan.py`: {len(defs)} distinct tool definitions (corpus tools with numbered copies) in "
        f"batches of {BATCH}, sequential `POST /v1/definitions` to the release aggregator on SQLite (one "
        f"commit per batch), {cpu} cores shared with other work. Verdicts published: {verdicts}.",
        "",
        "| definitions | per second | median batch of 256 (ms) |",
        "|---|---:|---:|",
        *[f"| {name} | {rate:,.0f} | {b:.1f} |" for name, rate, b in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"mesh-scan-{datetime.date.today()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
