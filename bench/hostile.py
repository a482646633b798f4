#!/usr/bin/env python3
"""One hostile low-privilege credential against a real aggregator (`--profile server` build): the
six attacks of the hardening review, each re-run while a normal sidecar writes and a probe polls
`/healthz`, with the latency those see (p50/p99/max) and what the attack achieved.

    cargo build --profile server -p mcp-warden-aggregator --bins
    python3 bench/hostile.py [--out docs/results/hostile-DATE.md]

Stdlib only. Every loop is bounded in count and time; the aggregator is started in a temporary
directory on a free loopback port and stopped by its PID. Attack connections come from
127.0.0.2 (another peer than the sidecar and the probe, as in a mesh).
"""

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "server" / "mcp-warden-aggregator"
SIDECAR, ATTACKER, OPERATOR, READER, SETUP = ("sidecar-good-token-0001", "sidecar-evil-token-0001", "operator-token-0000001",
                                             "reader-token-00000001", "sidecar-setup-token-001")
RATERS = 300  # rater tokens: 300 x 100 vouches = 30,000 names
FLOOD_LIMIT_S = 180


def tokens():
    t = [{"token": SIDECAR, "name": "sidecar-good", "role": "sidecar"},
         {"token": ATTACKER, "name": "sidecar-evil", "role": "sidecar"},
         {"token": SETUP, "name": "sidecar-setup", "role": "sidecar"},
         {"token": OPERATOR, "name": "ops", "role": "operator"},
         {"token": READER, "name": "dash", "role": "reader"}]
    t += [{"token": f"rater-token-{i:08d}", "name": f"rater-{i}", "role": "rater"} for i in range(RATERS)]
    return {"tokens": t}


class Aggregator:
    def __init__(self, config):
        self.dir = tempfile.mkdtemp(prefix="mcp-warden-hostile-")
        Path(self.dir, "tokens.json").write_text(json.dumps(tokens()))
        Path(self.dir, "config.json").write_text(json.dumps(config))
        self.log = open(Path(self.dir, "aggregator.log"), "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--listen", "127.0.0.1:0", "--db", str(Path(self.dir, "trust.db")),
             "--tokens", str(Path(self.dir, "tokens.json")), "--config", str(Path(self.dir, "config.json"))],
            stdout=subprocess.PIPE, stderr=self.log)
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line.startswith(b"listening on "):
            line = self.proc.stdout.readline()
        if not line.startswith(b"listening on "):
            log = Path(self.dir, "aggregator.log").read_text(errors="replace")[-2000:]
            self.stop()
            sys.exit(f"the aggregator did not start:\n{log}")
        host, port = line.decode().split()[-1].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def conn(self, source=None, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)

    def call(self, method, path, token=None, body=None, conn=None, timeout=30):
        c = conn or self.conn(timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        t0 = time.perf_counter()
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            status = r.status
        except (OSError, http.client.HTTPException) as e:
            status, raw = 0, str(e).encode()
            c.close()
        elapsed = time.perf_counter() - t0
        if conn is None:
            c.close()
        try:
            return status, json.loads(raw or b"null"), elapsed
        except ValueError:
            return status, raw.decode(errors="replace"), elapsed

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Observer:
    """A normal sidecar writing a one-server batch and a probe polling /healthz, every 100 ms."""

    def __init__(self, agg):
        self.agg, self.stop_at = agg, None
        self.writes, self.health, self.failed = [], [], []

    def _sidecar(self):
        c, n = self.agg.conn(timeout=30), 0
        while time.monotonic() < self.stop_at:
            n += 1
            batch = {"sidecar": "good-pod", "batch_id": f"good-{time.time_ns()}-{n}",
                     "servers": [{"server": "srv-0", "outcomes": {"success": 1}}]}
            s, body, el = self.agg.call("POST", "/v1/signals", SIDECAR, batch, conn=c)
            (self.writes if s == 200 else self.failed).append(el if s == 200 else (s, str(body)[:100]))
            if s != 200:
                c.close()
                c = self.agg.conn(timeout=30)
            time.sleep(0.1)
        c.close()

    def _probe(self):
        while time.monotonic() < self.stop_at:
            s, body, el = self.agg.call("GET", "/healthz", timeout=30)
            (self.health if s == 200 else self.failed).append(el if s == 200 else (s, str(body)[:100]))
            time.sleep(0.1)

    def run(self, seconds):
        self.stop_at = time.monotonic() + seconds
        ts = [threading.Thread(target=self._sidecar), threading.Thread(target=self._probe)]
        for t in ts:
            t.start()
        return ts

    def report(self):
        def q(xs):
            if not xs:
                return "-"
            xs = sorted(xs)
            p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
            return f"p50 {statistics.median(xs) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {xs[-1] * 1000:.1f} ms (n={len(xs)})"
        return {"sidecar write": q(self.writes), "/healthz": q(self.health),
                "failed": len(self.failed), "failures": sorted({str(f) for f in self.failed})[:3]}


def observe(agg, seconds, attack, *args):
    """Observes while the attack runs (`seconds` for the slow-client attacks; a flood until its
    last write, at most `FLOOD_LIMIT_S`)."""
    obs = Observer(agg)
    ts = obs.run(FLOOD_LIMIT_S + seconds)
    t0 = time.monotonic()
    outcome = attack(agg, seconds, *args)
    outcome["attack seconds"] = round(time.monotonic() - t0, 1)
    obs.stop_at = time.monotonic()
    for t in ts:
        t.join()
    r = obs.report()
    r["attack"] = outcome
    return r


# ---------------------------------------------------------------------------------------------
# The attacks


def vouch_flood(agg, seconds, names_target):
    """Raters vouch for invented names until `names_target` names exist, then keep vouching and
    withdrawing at their rate for the rest of the window."""
    deadline = time.monotonic() + FLOOD_LIMIT_S
    made, refused, acks = 0, 0, []
    per = 100

    def rater(i):
        nonlocal made, refused
        c = agg.conn()
        tok = f"rater-token-{i:08d}"
        for j in range(per):
            if time.monotonic() > deadline:
                break
            s, _, el = agg.call("POST", "/v1/ratings", tok, {"subject": {"kind": "rater", "name": f"n-{i}-{j}"}, "value": 1}, conn=c)
            made += s == 200
            refused += s == 409
            acks.append(el)
        # Past the cap: the 101st is refused.
        s, _, _ = agg.call("POST", "/v1/ratings", tok, {"subject": {"kind": "rater", "name": f"n-{i}-x"}, "value": 1}, conn=c)
        refused += s == 409
        c.close()

    raters = names_target // per
    threads = [threading.Thread(target=rater, args=(i,)) for i in range(raters)]
    for k in range(0, len(threads), 16):
        for t in threads[k:k + 16]:
            t.start()
        for t in threads[k:k + 16]:
            t.join()
    acks.sort()
    return {"vouches acknowledged": made, "refused past the per-rater cap": refused,
            "vouch ack p50 ms": round(statistics.median(acks) * 1000, 1) if acks else None,
            "vouch ack p99 ms": round(acks[int(len(acks) * 0.99)] * 1000, 1) if acks else None}


def slow_bodies(agg, seconds, n):
    """`n` connections (one sidecar token) each sending a /v1/signals body one byte a second."""
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((agg.host, agg.port), timeout=5, source_address=("127.0.0.2", 0))
            s.sendall(f"POST /v1/signals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ATTACKER}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
            socks.append(s)
        except OSError:
            pass
    deadline = time.monotonic() + seconds
    answered = {}
    while time.monotonic() < deadline:
        for s in list(socks):
            try:
                s.sendall(b" ")
            except OSError:
                socks.remove(s)
        time.sleep(1)
    for s in socks:
        s.close()
    return {"slow bodies opened": n, "still open at the end": len(socks)}


def slow_connections(agg, seconds, n):
    """`n` connections trickling their request headers, one byte a second."""
    socks, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection((agg.host, agg.port), timeout=5, source_address=("127.0.0.2", 0))
            s.sendall(b"GET /v1/scores HTTP/1.1\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in list(socks):
            try:
                s.sendall(b"X")
            except OSError:
                socks.remove(s)
        time.sleep(1)
    for s in socks:
        s.close()
    return {"slow connections attempted": n, "kept open by the aggregator to the end": len(socks)}


def concurrent_verifies(agg, seconds, readers):
    deadline = time.monotonic() + seconds
    durations, results = [], []

    def reader():
        while time.monotonic() < deadline:
            s, body, el = agg.call("GET", "/v1/audit/verify", READER, timeout=60)
            durations.append(el)
            results.append(s == 200 and isinstance(body, dict) and body.get("ok"))

    ts = [threading.Thread(target=reader) for _ in range(readers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"verifications": len(durations), "all ok": all(results),
            "verify p50 ms": round(statistics.median(durations) * 1000, 1) if durations else None}


def fill_audit(agg, entries):
    def worker(k, count):
        c = agg.conn()
        for i in range(count // 2):
            agg.call("POST", f"/v1/servers/a-{k}-{i}/quarantine", OPERATOR, {"reason": "bench"}, conn=c)
            agg.call("POST", f"/v1/servers/a-{k}-{i}/release", OPERATOR, {"reason": "bench"}, conn=c)
        c.close()
    ts = [threading.Thread(target=worker, args=(k, entries // 8)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def critical_flood(agg, servers, rule):
    """The mesh's servers are known (two other sidecars reported them: the admission quorum); one
    token sends a critical finding on each, in batches of 1,000."""
    names = [f"mesh-{i}" for i in range(servers)]
    for token in (SETUP, SIDECAR):
        for k in range(0, servers, 1000):
            batch = {"sidecar": "setup", "batch_id": f"setup-{rule}-{k}",
                     "servers": [{"server": n, "outcomes": {"success": 1}} for n in names[k:k + 1000]]}
            agg.call("POST", "/v1/signals", token, batch)
    t0 = time.perf_counter()
    for k in range(0, servers, 1000):
        batch = {"sidecar": "evil", "batch_id": f"evil-{rule}-{k}", "servers": [
            {"server": n, "security": [{"rule": rule, "severity": "critical", "tool": "t", "quarantine": True}]}
            for n in names[k:k + 1000]]}
        agg.call("POST", "/v1/signals", ATTACKER, batch, timeout=60)
    took = time.perf_counter() - t0
    _, doc, _ = agg.call("GET", "/v1/scores", READER)
    states = {}
    for s in doc["servers"]:
        if s["server"].startswith("mesh-"):
            states[s["state"]] = states.get(s["state"], 0) + 1
    return {"critical events sent": servers, "rule": rule, "seconds": round(took, 2), "states of the mesh's servers": states}


def invented_names(agg, n):
    dropped = 0
    for k in range(0, n, 1000):
        batch = {"sidecar": "evil", "batch_id": f"inv-{k}",
                 "servers": [{"server": f"invented-{k + i}", "outcomes": {"success": 1}} for i in range(1000)]}
        _, ack, _ = agg.call("POST", "/v1/signals", ATTACKER, batch)
        dropped += len(ack.get("dropped_servers", [])) if isinstance(ack, dict) else 0
    _, doc, _ = agg.call("GET", "/v1/scores", READER)
    _, view, _ = agg.call("GET", "/v1/provisional", READER)
    return {"invented names sent": n, "dropped": dropped,
            "provisional afterwards": view.get("total") if isinstance(view, dict) else None,
            "tracked afterwards": sum(1 for s in doc["servers"] if s["server"].startswith("invented-"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="observation window per attack")
    ap.add_argument("--out", help="also write the results as Markdown here")
    args = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --profile server -p mcp-warden-aggregator --bins")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    lots = {"per_second": 100000, "burst": 100000}
    results = {}

    # Raters and operators unthrottled for the set-up (the attacks' own rates are the point of
    # the slow-client runs, which use the default limits).
    base = {"limits": {"rates": {"rater": lots, "operator": lots, "reader": lots}},
            "sidecar": {"new_servers_per_window": 1000000}}

    cost = subprocess.run(["cargo", "run", "-q", "--profile", "server", "-p", "mcp-warden-core", "--example",
                           "standing_cost", "--", "3000", "30000"], cwd=ROOT, capture_output=True, text=True, check=True)
    results["standing computation (one evaluation, off the write path)"] = [json.loads(l) for l in cost.stdout.splitlines()
                                                                           if l.startswith("{")] or cost.stdout

    for names in (3000, 30000):
        agg = Aggregator(base)
        try:
            results[f"vouch flood to {names} names"] = observe(agg, args.seconds, vouch_flood, names)
        finally:
            agg.stop()

    for title, attack, n in (("300 slow bodies", slow_bodies, 300), ("1,100 slow connections", slow_connections, 1100)):
        agg = Aggregator({})
        try:
            results[title] = observe(agg, args.seconds, attack, n)
        finally:
            agg.stop()

    agg = Aggregator(base)
    try:
        fill_audit(agg, 10000)
        results["60 concurrent verifies of a 10,000-entry log"] = observe(agg, args.seconds, concurrent_verifies, 60)
    finally:
        agg.stop()

    for rule in ("unicode/tag-characters", "invented-critical-rule"):
        agg = Aggregator(base)
        try:
            results[f"one sidecar token, 10,000 critical events ({rule})"] = critical_flood(agg, 10000, rule)
        finally:
            agg.stop()

    agg = Aggregator({})
    try:
        results["one sidecar token, 10,000 invented server names"] = invented_names(agg, 10000)
    finally:
        agg.stop()

    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text("# One hostile credential against the aggregator (bench/hostile.py)\n\n"
                                  f"`--profile server` build, {time.strftime('%Y-%m-%d')}, 2 shared cores.\n\n"
                                  f"```json\n{text}\n```\n")


if __name__ == "__main__":
    main()
