# mcp-warden: `make run` starts the testbed with a live demo, `make test` runs every test.
# Both set up what they need first (idempotent: stamps under .stamps/).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMPS      := .stamps
TOOLS       := .tools
NODE_DIR    := testbed/node_modules
WASM_BINDGEN_VERSION := 0.2.130
WASM        := target/wasm32-wasip1/release/mcp_warden_filter.wasm
CARGO_WASM_TEST := CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(CURDIR)/$(TOOLS)/bin/wasm-bindgen-test-runner

.PHONY: help setup wasm run demo test test-unit test-wasm test-integration lint bench clean

help:
	@echo "make run    set up, start the testbed (real Envoy + MCP servers) and run the live demo"
	@echo "make test   set up and run every test (unit, wasm, Envoy config validation, integration, conformance)"
	@echo "make bench  measure trip count and failover time in the testbed"
	@echo "make wasm   build the filter (release, $(WASM))"

# ---------------------------------------------------------------------------------------------
# Setup

setup: $(STAMPS)/rust-targets $(STAMPS)/venv $(STAMPS)/node $(STAMPS)/wasm-bindgen

$(STAMPS):
	@mkdir -p $(STAMPS)

$(STAMPS)/rust-targets: | $(STAMPS)
	rustup target add wasm32-wasip1 wasm32-unknown-unknown
	@touch $@

$(STAMPS)/venv: testbed/requirements.txt | $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r testbed/requirements.txt
	@touch $@

$(STAMPS)/node: testbed/package.json testbed/package-lock.json | $(STAMPS)
	cd testbed && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMPS)/wasm-bindgen: | $(STAMPS)
	test -x $(TOOLS)/bin/wasm-bindgen-test-runner || \
		cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS)
	@touch $@

# ---------------------------------------------------------------------------------------------
# Build

wasm: $(STAMPS)/rust-targets
	cargo build --release --target wasm32-wasip1 -p mcp-warden-filter

# ---------------------------------------------------------------------------------------------
# Run

run: setup wasm
	$(PY) testbed/run.py

demo: run

# ---------------------------------------------------------------------------------------------
# Tests

test: setup wasm lint test-unit test-wasm test-integration

lint:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p mcp-warden-filter --target wasm32-wasip1 -- -D warnings

test-unit:
	cargo test --workspace

test-wasm: $(STAMPS)/wasm-bindgen
	$(CARGO_WASM_TEST) cargo test -p mcp-warden-core --target wasm32-unknown-unknown

test-integration: setup wasm
	$(PY) -m pytest tests -p no:cacheprovider

bench: setup wasm
	$(PY) testbed/bench_failover.py

clean:
	cargo clean
	rm -rf $(STAMPS)
