"""Plots for `make bench` (run with bench/.venv, which has matplotlib): latency distributions per
variant at the fixed offered rate, one panel per workload and connection count, plus
throughput and CPU per request at saturation. Usage: plot.py RESULTS.json OUT.png"""

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"direct": "#7f7f7f", "baseline": "#1f77b4", "warden": "#d62728", "warden_open": "#ff7f0e",
          "contextforge": "#2ca02c"}
ORDER = ["direct", "baseline", "warden", "warden_open", "contextforge"]


def nines(p: float) -> float:
    """x position of a percentile on a 'number of nines' axis (50 -> 0.3, 99 -> 2, 99.9 -> 3)."""
    return -math.log10(max(1e-6, 1 - p / 100))


def main() -> int:
    res = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    cells = [c for c in res["cells"] if c["phase"] == "matrix"]
    workloads = list(dict.fromkeys(c["workload"] for c in cells))
    conns = sorted({c["conns"] for c in cells})
    fig, axes = plt.subplots(len(workloads), len(conns), figsize=(5.2 * len(conns), 3.6 * len(workloads)),
                             squeeze=False, sharex=True)
    ticks = [50, 90, 99, 99.9, 99.99]
    for i, w in enumerate(workloads):
        for j, c in enumerate(conns):
            ax = axes[i][j]
            rate = res.get("rates", {}).get(f"{w}/{c}")
            for v in ORDER:
                cell = next((x for x in cells if x["variant"] == v and x["workload"] == w and x["conns"] == c
                             and x["mode"] == "fixed_rate"), None)
                if not cell or not cell.get("percentiles"):
                    continue
                pts = [(p, us) for p, us in cell["percentiles"] if us is not None and p < 100]
                if not pts:
                    continue
                label = v if v != "contextforge" else f"contextforge ({cell.get('offered_rps', 0):g}/s)"
                ax.plot([nines(p) for p, _ in pts], [us / 1000 for _, us in pts], marker="o", ms=2.5, lw=1.4,
                        color=COLORS.get(v), label=label)
            ax.set_yscale("log")
            ax.set_xticks([nines(t) for t in ticks])
            ax.set_xticklabels([f"p{t:g}" for t in ticks])
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(f"{w}, {c} conn{'s' if c > 1 else ''}, {rate or '?'} req/s offered", fontsize=10)
            if j == 0:
                ax.set_ylabel("latency (ms, log)")
            if i == 0 and j == 0:
                ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"mcp-warden benchmark {res['date']}: latency at a fixed offered rate (oha, latency-corrected)",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=110)

    # Throughput and CPU at saturation, as ratios to the baseline.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 4.8))
    labels, series, cpu = [], {v: [] for v in ORDER}, {v: [] for v in ORDER}
    for w in workloads:
        for c in conns:
            base = next((x for x in cells if x["variant"] == "baseline" and x["workload"] == w and x["conns"] == c
                         and x["mode"] == "saturation"), None)
            if not base:
                continue
            labels.append(f"{w}\n{c}c")
            for v in ORDER:
                x = next((y for y in cells if y["variant"] == v and y["workload"] == w and y["conns"] == c
                          and y["mode"] == "saturation"), None)
                series[v].append((x["rps"] / base["rps"]) if x and base["rps"] else float("nan"))
                cpu[v].append(x.get("proxy_cpu_us_per_req") if x and v in ("baseline", "warden", "warden_open") else float("nan"))
    n = len(labels)
    width = 0.16
    for k, v in enumerate(ORDER):
        a1.bar([i + (k - 2) * width for i in range(n)], series[v], width, color=COLORS[v], label=v)
    a1.axhline(0.9, color="k", ls="--", lw=0.8)
    a1.text(n - 0.5, 0.92, "target 0.9", fontsize=8, ha="right")
    a1.set_yscale("log")
    a1.set_xticks(range(n))
    a1.set_xticklabels(labels, fontsize=7)
    a1.set_ylabel("throughput / baseline (log)")
    a1.set_title("saturation throughput, ratio to Envoy without the filter")
    a1.legend(fontsize=8, loc="lower left", ncol=5, framealpha=0.9)
    for k, v in enumerate(["baseline", "warden", "warden_open"]):
        a2.bar([i + (k - 1) * 0.27 for i in range(n)], cpu[v], 0.27, color=COLORS[v], label=v)
    a2.set_xticks(range(n))
    a2.set_xticklabels(labels, fontsize=7)
    a2.set_ylabel("Envoy CPU µs per request")
    a2.set_title("Envoy CPU time per request at saturation")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + "-throughput.png"), dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
