"""Durability of the trust aggregator under repeated SIGKILL.

Round after round, concurrent clients write (signal batches with unique ids, ratings, flags,
quarantines and releases), the aggregator is SIGKILLed at a random moment in the middle of the
burst and restarted on the same database, and every write that was acknowledged with a 2xx must
be there: its batch id answers `duplicate`, its rating, flag and audit entry are present, and the
audit log's hash chain verifies. (test_trust.py keeps the single-kill test with sidecars.)
"""

from __future__ import annotations

import random
import shutil
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from http.client import HTTPException

from warden_testbed import Aggregator, http_json

ROUNDS = 20
# The whole test: rounds stop early past it (at least MIN_ROUNDS must fit).
BUDGET_S = 60.0
MIN_ROUNDS = 10
# When the kill comes, after the burst started.
KILL_AFTER_S = (0.1, 0.7)

SIDECAR = "sidecar-1-token-testbed"
RATER = "rater-token-testbed"
SCANNER = "scanner-token-testbed"
OPERATOR = "operator-token-testbed"
READER = "reader-token-testbed"

# Durability, not rate limits, is under test: lift them.
LOTS = {"per_second": 1_000_000, "burst": 1_000_000}
CONFIG = {"limits": {"rates": {r: LOTS for r in
                               ("sidecar", "rater", "scanner", "operator", "reader", "unauthenticated")}}}

# Connection-level failures: the aggregator died under the request.
GONE = (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError, OSError)


@dataclass
class Acked:
    """Writes acknowledged with a 2xx, by kind."""
    batches: list[tuple[str, str]] = field(default_factory=list)  # (server, batch id)
    ratings: list[tuple[str, float, str]] = field(default_factory=list)  # (server, value, comment)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (server, rule)
    decisions: list[str] = field(default_factory=list)  # audit reasons
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def total(self) -> int:
        return len(self.batches) + len(self.ratings) + len(self.flags) + len(self.decisions)

    def merge(self, other: "Acked") -> None:
        self.batches += other.batches
        self.ratings += other.ratings
        self.flags += other.flags
        self.decisions += other.decisions
        self.sent += other.sent


def post(agg: Aggregator, path: str, body: dict, token: str):
    return agg.api("POST", path, body, token=token)


def sidecar(agg: Aggregator, rnd: int, k: int, stop: threading.Event, acked: Acked) -> None:
    server = f"dur-{k}"
    i = 0
    while not stop.is_set():
        batch_id = f"r{rnd}-s{k}-{i}"
        i += 1
        with acked.lock:
            acked.sent += 1
        status, _, body = post(agg, "/v1/signals", {"sidecar": f"pod-{k}", "batch_id": batch_id,
                                                    "servers": [{"server": server, "outcomes": {"success": 1}}]},
                               SIDECAR)
        if status == 200 and body.get("batch_id") == batch_id:
            with acked.lock:
                acked.batches.append((server, batch_id))


def rater(agg: Aggregator, rnd: int, stop: threading.Event, acked: Acked) -> None:
    i = 0
    while not stop.is_set():
        server, value, comment = f"rated-{rnd}-{i}", (i % 11) / 10, f"r{rnd}-{i}"
        i += 1
        status, _, _ = post(agg, "/v1/ratings", {"subject": {"kind": "server", "name": server}, "value": value,
                                                 "comment": comment}, RATER)
        if status == 200:
            with acked.lock:
                acked.ratings.append((server, value, comment))


def scanner(agg: Aggregator, rnd: int, stop: threading.Event, acked: Acked) -> None:
    i = 0
    while not stop.is_set():
        # The server view lists a server's newest 50 flags: spread them.
        server, rule = f"flagged-{rnd}-{i // 40}", f"rule-{rnd}-{i}"
        i += 1
        status, _, _ = post(agg, "/v1/flags", {"server": server, "severity": "low", "rule": rule}, SCANNER)
        if status == 200:
            with acked.lock:
                acked.flags.append((server, rule))


def operator(agg: Aggregator, rnd: int, stop: threading.Event, acked: Acked) -> None:
    server = "toggle"
    status, _, d = agg.api("GET", f"/v1/servers/{server}", token=READER)
    quarantined = status == 200 and d["state"] == "quarantined"
    i = 0
    while not stop.is_set():
        reason = f"r{rnd}-{i}"
        i += 1
        action = "release" if quarantined else "quarantine"
        status, _, _ = post(agg, f"/v1/servers/{server}/{action}", {"reason": reason}, OPERATOR)
        if status == 200:
            quarantined = not quarantined
            with acked.lock:
                acked.decisions.append(reason)
        elif status == 409:
            quarantined = not quarantined


def until_gone(fn, *args) -> None:
    """Runs a writer until the aggregator stops answering."""
    try:
        fn(*args)
    except GONE:
        pass


def audit_reasons(agg: Aggregator) -> set[str]:
    reasons: set[str] = set()
    before = None
    while True:
        q = "/v1/audit?limit=1000" + (f"&before_id={before}" if before else "")
        status, _, page = agg.api("GET", q, token=OPERATOR)
        assert status == 200, page
        reasons |= {e["reason"] for e in page["entries"]}
        before = page.get("next_before_id")
        if not before:
            return reasons


def check(agg: Aggregator, acked: Acked, where: str) -> None:
    """Every acknowledged write of `acked` is in the (restarted) aggregator."""
    for server, batch_id in acked.batches:
        status, _, ack = post(agg, "/v1/signals", {"sidecar": "pod", "batch_id": batch_id,
                                                   "servers": [{"server": server, "outcomes": {"success": 1}}]},
                              SIDECAR)
        assert status == 200 and ack["duplicate"] is True, f"{where}: acknowledged batch {batch_id} lost: {ack}"
    views: dict[str, dict] = {}

    def view(server: str) -> dict:
        if server not in views:
            status, _, d = agg.api("GET", f"/v1/servers/{server}", token=READER)
            assert status == 200, f"{where}: {server}: {status} {d}"
            views[server] = d
        return views[server]

    for server, value, comment in acked.ratings:
        raters = {r["rater"]: r for r in view(server)["ratings"]["raters"]}
        assert "alice" in raters, f"{where}: acknowledged rating of {server} lost"
        assert (raters["alice"]["value"], raters["alice"].get("comment")) == (value, comment), raters["alice"]
    for server, rule in acked.flags:
        rules = {f["rule"] for f in view(server)["flags"]}
        assert rule in rules, f"{where}: acknowledged flag {rule} on {server} lost"
    missing = set(acked.decisions) - audit_reasons(agg)
    assert not missing, f"{where}: acknowledged decisions missing from the audit log: {sorted(missing)}"
    status, _, v = agg.api("GET", "/v1/audit/verify", token=READER)
    assert status == 200 and v["ok"] is True, f"{where}: audit chain: {v}"


def test_acknowledged_writes_survive_repeated_sigkill_mid_burst():
    agg = Aggregator(config=CONFIG)
    everything = Acked()
    rng = random.Random()
    t0 = time.monotonic()
    rounds = 0
    kills_with_writes_in_flight = 0
    try:
        agg.start()
        for rnd in range(ROUNDS):
            if time.monotonic() - t0 > BUDGET_S - 5:
                break
            acked = Acked()
            stop = threading.Event()
            writers = [threading.Thread(target=until_gone, args=(sidecar, agg, rnd, k, stop, acked)) for k in range(2)]
            writers += [threading.Thread(target=until_gone, args=(fn, agg, rnd, stop, acked))
                        for fn in (rater, scanner, operator)]
            for w in writers:
                w.start()
            time.sleep(rng.uniform(*KILL_AFTER_S))  # a random moment inside the burst
            in_flight = sum(w.is_alive() for w in writers)
            agg.kill()
            stop.set()
            for w in writers:
                w.join(10)
                assert not w.is_alive(), "a writer is stuck"
            kills_with_writes_in_flight += in_flight == len(writers)
            assert acked.total() > 0, f"round {rnd}: nothing was acknowledged before the kill"
            agg.proc = None
            agg.start()
            check(agg, acked, f"round {rnd}")
            everything.merge(acked)
            rounds += 1
        # Once more, everything from every round.
        check(agg, everything, "at the end")
        status, _, v = agg.api("GET", "/v1/audit/verify", token=READER)
        elapsed = time.monotonic() - t0
        print(f"{rounds} SIGKILLs mid-burst in {elapsed:.1f} s: {everything.total()} acknowledged writes all present "
              f"({len(everything.batches)} batches of {everything.sent} sent, {len(everything.ratings)} ratings, "
              f"{len(everything.flags)} flags, {len(everything.decisions)} decisions; audit chain of "
              f"{v['entries']} entries verifies)")
        assert rounds >= MIN_ROUNDS, f"only {rounds} rounds fit in {BUDGET_S} s"
        assert kills_with_writes_in_flight == rounds, "the kill came after a writer had stopped"
        assert elapsed < BUDGET_S + 30
    finally:
        agg.stop()
        shutil.rmtree(agg.workdir, ignore_errors=True)
