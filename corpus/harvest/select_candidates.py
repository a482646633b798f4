#!/usr/bin/env python3
"""Picks harvest candidates from the registries' package lists (name<TAB>version<TAB>... TSVs):
MCP servers by name and summary, most downloaded first, frameworks/clients/proxies left out.
Usage: select_candidates.py NPM.tsv PYPI.tsv N_NPM N_PYPI > candidates.tsv"""
import re
import sys

SKIP = re.compile(r"sdk|client|inspector|proxy|framework|evals?\b|-ui\b|/ui|nest|toolkit|plugin|adapter|"
                  r"linux|win32|darwin|-x64|arm64|instrumentation|bridge|gateway|cli\b|/cli|types|core\b|"
                  r"template|create-|starter|boilerplate|devtools|testing|mock|hello", re.I)


def npm(path, n):
    rows = []
    for line in open(path, encoding="utf-8", errors="replace"):
        f = line.rstrip("\n").split("\t")
        if len(f) < 4 or not f[2].isdigit():
            continue
        name, ver, dl, summ = f[0], f[1], int(f[2]), f[3].lower()
        if "mcp" not in name.lower() and "server-" not in name.lower():
            continue
        if not ("mcp" in summ or "model context protocol" in summ) or "server" not in summ:
            continue
        if SKIP.search(name) or dl < 300:
            continue
        rows.append((dl, name, ver))
    rows.sort(reverse=True)
    return [("npm", name, ver) for _, name, ver in rows[:n]]


def pypi(path, n):
    rows = []
    for line in open(path, encoding="utf-8", errors="replace"):
        f = line.rstrip("\n").split("\t")
        if len(f) < 5 or not f[3].isdigit():
            continue
        name, ver, rank, summ = f[0], f[1], int(f[3]), f[4].lower()
        if "mcp" not in name.lower() or "server" not in summ + name.lower():
            continue
        if SKIP.search(name) or name.lower() in ("mcp", "fastmcp", "mcp-server"):
            continue
        rows.append((rank, name, ver))
    rows.sort()
    return [("pypi", name, ver) for _, name, ver in rows[:n]]


if __name__ == "__main__":
    out = npm(sys.argv[1], int(sys.argv[3])) + pypi(sys.argv[2], int(sys.argv[4]))
    # interleave so that a deadline leaves both registries represented
    a = [r for r in out if r[0] == "npm"]
    b = [r for r in out if r[0] == "pypi"]
    mixed = []
    for i in range(max(len(a), len(b))):
        mixed += a[i:i + 1] + b[i:i + 1]
    for r in mixed:
        print("\t".join(r))
