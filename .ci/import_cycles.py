#!/usr/bin/env python3
"""Fails if the top-level modules of a crate's `src/` import each other in a circle.

Usage: .ci/import_cycles.py CRATE_SRC_DIR...   (run by `make lint`)

A module is a file `src/x.rs` or a directory `src/x/` (its files count as `x`); an edge x -> y is
any `crate::y` path in x's code (a `use` or a qualified call), comments left out. Prints each
crate's module graph's strongly connected components of more than one module, and exits 1 if any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PATH = re.compile(r"\bcrate::(?:\{([^}]*)\}|([a-z_][a-z0-9_]*))")


def modules(src: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main") or rel.parts[0] == "bin":
            continue
        found.setdefault(top, []).append(f)
    return found


def edges(files: list[Path], names: set[str], me: str) -> set[str]:
    out: set[str] = set()
    for f in files:
        text = re.sub(r"//[^\n]*", "", f.read_text())
        for group, single in PATH.findall(text):
            for name in (group.split(",") if group else [single]):
                name = name.strip().split("::")[0].split(" ")[0]
                if name in names and name != me:
                    out.add(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(dirs: list[str]) -> int:
    bad = 0
    for d in dirs:
        src = Path(d)
        mods = modules(src)
        graph = {m: edges(files, set(mods), m) for m, files in mods.items()}
        found = cycles(graph)
        for comp in found:
            print(f"{src}: import circle among {', '.join(comp)}")
            for m in comp:
                print(f"  {m} -> {', '.join(sorted(graph[m] & set(comp)))}")
        if not found:
            print(f"{src}: {len(mods)} modules, no import circle")
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["filter/src", "aggregator/src"]))
