#!/bin/sh
# Rebuilds the corpus, retrains the model on the dev split and reports dev and test figures.
# Usage: corpus/run.sh [--no-train]
set -eu
cd "$(dirname "$0")/.."
python3 corpus/generate.py
cargo build -q --release -p mcp-warden-core --example corpus_eval
EVAL=target/release/examples/corpus_eval
if [ "${1:-}" != "--no-train" ]; then
  $EVAL corpus/data/dev.jsonl --dump /tmp/corpus-dev-features.jsonl --names /tmp/corpus-feature-names.txt > /dev/null
  python3 corpus/train.py /tmp/corpus-dev-features.jsonl /tmp/corpus-feature-names.txt
  cargo build -q --release -p mcp-warden-core --example corpus_eval
fi
$EVAL corpus/data/dev.jsonl corpus/data/test.jsonl > corpus/results.txt
cargo run -q --release -p mcp-warden-core --example rugpull_eval -- corpus/data/dev.jsonl >> corpus/results.txt
cargo run -q --release -p mcp-warden-core --example rugpull_eval -- corpus/data/test.jsonl >> corpus/results.txt
grep -E "^(==|--)" corpus/results.txt
