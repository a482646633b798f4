#!/usr/bin/env python3
"""Trains the detector's model: a logistic regression over the detector's named features, fitted
on the dev split only, with thresholds calibrated on out-of-fold scores (folds by source server,
so a server's tools are never scored by a model that saw them).

Input: the features the engine itself computes (`corpus_eval --dump`), so training and run time
read the same features. Output: core/src/inspect/detect/model.json (weights by feature name,
bias, thresholds, version). Pure Python, deterministic.

Usage: train.py DEV_FEATURES.jsonl FEATURE_NAMES.txt [--out model.json]
"""
import hashlib
import json
import math
import sys

L2 = 0.005        # pull toward the hand-set prior (corpus/prior.json), not toward zero
EPOCHS = 600
LR = 2.0
BENIGN_WEIGHT = 3.0   # a false positive costs more than a miss
FOLDS = 5
TARGET_FPR_STRIP = 0.006   # strip and above: at most 0.4% of dev benign tools (out of fold)
TARGET_FPR_RECORD = 0.03    # record (a finding only): at most 3% of dev benign tools (out of fold)
QUARANTINE_MARGIN = 6.0    # quarantine: above every benign out-of-fold score, by this margin


def sigmoid(z):
    return 1 / (1 + math.exp(-max(-30, min(30, z))))


def fit(rows, nf, prior, prior_b):
    w = list(prior)
    b = prior_b
    n = len(rows)
    for ep in range(EPOCHS):
        gw = [0.0] * nf
        gb = 0.0
        tot = 0.0
        for x, y in rows:
            z = b + sum(wi * xi for wi, xi in zip(w, x) if xi)
            p = sigmoid(z)
            c = BENIGN_WEIGHT if y == 0 else 1.0
            e = (p - y) * c
            tot += c
            gb += e
            for i, xi in enumerate(x):
                if xi:
                    gw[i] += e * xi
        lr = LR / (1 + ep / 100)
        b -= lr * gb / tot
        for i in range(nf):
            w[i] -= lr * (gw[i] / tot + L2 * (w[i] - prior[i]))
    return w, b


def score(w, b, x):
    return b + sum(wi * xi for wi, xi in zip(w, x))


def fold_of(server):
    return int(hashlib.sha256(server.encode()).hexdigest(), 16) % FOLDS


def main():
    feats_path, names_path = sys.argv[1], sys.argv[2]
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "core/src/inspect/detect/model.json"
    names = [l.strip() for l in open(names_path) if l.strip()]
    data = [json.loads(l) for l in open(feats_path)]
    rows = [(d["x"], 1 if d["label"] == "poisoned" else 0, d["server"]) for d in data]
    nf = len(names)
    pj = json.load(open("corpus/prior.json"))
    prior = [pj["weights"].get(n, 0.0) for n in names]
    prior_b = pj["bias"]
    # Out-of-fold scores, by server.
    oof = []
    for k in range(FOLDS):
        train = [(x, y) for x, y, s in rows if fold_of(s) != k]
        w, b = fit(train, nf, prior, prior_b)
        oof += [(score(w, b, x), y) for x, y, s in rows if fold_of(s) == k]
    ben = sorted(s for s, y in oof if y == 0)
    poi = sorted(s for s, y in oof if y == 1)

    def thr_for(fpr):
        # the smallest threshold with at most fpr of benign at or above it
        k = int(math.floor(fpr * len(ben)))
        return ben[len(ben) - 1 - k] + 1e-3 if k < len(ben) else ben[0]

    strip = thr_for(TARGET_FPR_STRIP)
    record = min(thr_for(TARGET_FPR_RECORD), strip)
    quarantine = max(ben[-1] + QUARANTINE_MARGIN, strip + 6.0)
    rec = sum(s >= strip for s in poi) / len(poi)
    fpr = sum(s >= strip for s in ben) / len(ben)
    print(f"out-of-fold on dev: recall@strip {rec:.3f}, FPR@strip {fpr:.4f}, thresholds record {record:.2f} "
          f"strip {strip:.2f} quarantine {quarantine:.2f}; quarantined poisoned {sum(s >= quarantine for s in poi)}/{len(poi)}")
    w, b = fit([(x, y) for x, y, _ in rows], nf, prior, prior_b)
    model = {
        "version": "lr-" + hashlib.sha256(json.dumps([w, b]).encode()).hexdigest()[:8],
        "note": "logistic regression over the detector's features, trained by corpus/train.py on corpus/data/dev.jsonl",
        "bias": round(b, 4),
        "weights": {n: round(x, 4) for n, x in zip(names, w)},
        "thresholds": {"record": round(record, 3), "strip": round(strip, 3), "quarantine": round(quarantine, 3)},
        "trained_on": {"rows": len(rows), "poisoned": sum(y for _, y, _ in rows), "servers": len({s for *_, s in rows})},
    }
    json.dump(model, open(out, "w"), indent=1, sort_keys=True)
    for n, x in sorted(zip(names, w), key=lambda t: -abs(t[1]))[:20]:
        print(f"  {x:+.2f} {n}")


if __name__ == "__main__":
    main()
