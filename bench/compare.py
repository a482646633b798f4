#!/usr/bin/env python3
"""Compares two `bench/run.py` results (the .json files), for example one run with an older
.wasm (`MCP_WARDEN_WASM=old.wasm`) and one with the current build.

Each run's own Envoy-alone cells are its reference: per workload cell, the throughput ratio
(variant / baseline at saturation) and the Envoy CPU the variant adds per request. Ratios taken
within one run survive a machine whose speed drifts between runs; absolute figures do not.

    .venv/bin/python bench/compare.py A.json B.json [--variant warden] [--label-a before --label-b after]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def cells(path: str) -> dict[tuple, dict]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {(c["variant"], c["workload"], c["conns"]): c
            for c in doc.get("cells", []) if c.get("phase") == "matrix" and c.get("mode") == "saturation"}


def relative(m: dict[tuple, dict], variant: str, workload: str, conns: int) -> tuple[float, float] | None:
    b, x = m.get(("baseline", workload, conns)), m.get((variant, workload, conns))
    if not b or not x or not b.get("rps"):
        return None
    return x["rps"] / b["rps"], x["proxy_cpu_us_per_req"] - b["proxy_cpu_us_per_req"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--variant", default="warden", help="the variant compared (default warden, the .wasm)")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    args = ap.parse_args()
    ma, mb = cells(args.a), cells(args.b)
    keys = sorted({(w, c) for (v, w, c) in ma if v == args.variant} & {(w, c) for (v, w, c) in mb if v == args.variant})
    if not keys:
        print(f"no saturation cells of `{args.variant}` in both files", file=sys.stderr)
        return 2
    la, lb = args.label_a, args.label_b
    print(f"| workload | conns | {la} × Envoy alone | {lb} × Envoy alone | {la} added CPU µs/req | {lb} added CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|")
    ra, rb, ca, cb = [], [], [], []
    for w, c in keys:
        a, b = relative(ma, args.variant, w, c), relative(mb, args.variant, w, c)
        if not a or not b:
            continue
        ra.append(a[0]); rb.append(b[0]); ca.append(a[1]); cb.append(b[1])
        print(f"| {w} | {c} | {a[0]:.2f} | {b[0]:.2f} | {a[1]:+.0f} | {b[1]:+.0f} |")
    print(f"| **median** | | **{statistics.median(ra):.2f}** | **{statistics.median(rb):.2f}** | "
          f"**{statistics.median(ca):+.0f}** | **{statistics.median(cb):+.0f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
