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
NATIVE      := target/native/libmcp_warden.so
# Which filter `make run` puts in Envoy: wasm (the .wasm, default) or native (the .so).
HOST        ?= wasm
CARGO_WASM_TEST := CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(CURDIR)/$(TOOLS)/bin/wasm-bindgen-test-runner

.PHONY: help setup wasm wasm-fault native native-fault aggregator dist run demo test test-unit test-wasm test-integration lint bench clean fuzz fuzz-short chaos

help:
	@echo "make run    set up, start the testbed (real Envoy + MCP servers) and run the live demo"
	@echo "make test   set up and run every test (unit, wasm, Envoy config validation, integration, conformance, browser, short chaos and fuzz runs)"
	@echo "make bench  the filter's cost against Envoy alone, the upstream alone and ContextForge"
	@echo "make bench-tools-list  latency a tools/list of 100 tools gets from Envoy alone and mcp-warden (inspection on, off)"
	@echo "make bench-bounds  memory and surviving session records at 100,000 sessions and 10,000 servers"
	@echo "make bench-mesh-scan  tool definitions the aggregator scans per second (mesh-wide scan)"
	@echo "make bench-failover  calls to trip, failover time, and agent-visible failures per 1,000 calls during a primary kill"
	@echo "make chaos  the full chaos suite (a few minutes; a short form runs in make test)"
	@echo "make fuzz   fuzz every core parser for a bounded time"
	@echo "make chaos  faults on the servers, the aggregator and Envoy under load (a few minutes)"
	@echo "make wasm   build the filter (release, $(WASM))"
	@echo "make native build the same filter as an Envoy dynamic module ($(NATIVE))"
	@echo "make run HOST=native  the testbed with the native module instead of the .wasm"

# ---------------------------------------------------------------------------------------------
# Setup

setup: $(STAMPS)/rust-targets $(STAMPS)/binaryen $(STAMPS)/venv $(STAMPS)/node $(STAMPS)/wasm-bindgen $(STAMPS)/chromium $(STAMPS)/postgres

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

# The dashboard's browser test (tests/integration/test_dashboard.py): Debian's Chromium, driven by
# playwright-core from testbed/package.json (Playwright's own browser download is never used).
$(STAMPS)/chromium: | $(STAMPS)
	test -x /usr/bin/chromium || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core; }
	@touch $@

# The aggregator's PostgreSQL backend is tested on Debian's server (15 on bookworm), started by
# the tests themselves (testbed/postgres.py: initdb in a temporary directory, a free loopback
# port, a non-root account); the distribution's own cluster is never used. openssl makes the test
# CA for the TLS tests (tests/integration/test_pg_tls.py).
$(STAMPS)/postgres: | $(STAMPS)
	{ ls /usr/lib/postgresql/*/bin/initdb && command -v openssl; } >/dev/null 2>&1 || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql openssl; }
	@touch $@

# wasm-opt (binaryen), the `make wasm` size pass: Debian's package.
$(STAMPS)/binaryen: | $(STAMPS)
	command -v wasm-opt >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			binaryen; }
	@touch $@

$(STAMPS)/wasm-bindgen: | $(STAMPS)
	test -x $(TOOLS)/bin/wasm-bindgen-test-runner || \
		cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS)
	@touch $@

# ---------------------------------------------------------------------------------------------
# Build

# The filter: cargo's module, then binaryen's size pass (`wasm-opt -Oz`, -17 %), the result
# copied over $(WASM), the module the tests run and `make dist` ships. Cargo links its own output
# (deps/) there again on every build, so the pass's result is kept beside it and the pass runs only
# when cargo's output is newer.
WASM_RAW := target/wasm32-wasip1/release/deps/mcp_warden_filter.wasm
WASM_OZ  := target/wasm32-wasip1/release/mcp_warden_filter.oz.wasm
# wasm-opt cannot detect them (the release profile strips the target_features section).
WASM_OPT_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue
wasm: $(STAMPS)/rust-targets $(STAMPS)/binaryen
	cargo build --release --target wasm32-wasip1 -p mcp-warden-filter
	@test $(WASM_OZ) -nt $(WASM_RAW) || { echo "wasm-opt -Oz $(WASM_RAW)"; \
		wasm-opt -Oz --strip-debug --strip-producers $(WASM_OPT_FEATURES) $(WASM_RAW) -o $(WASM_OZ); }
	@# Never cp onto $(WASM) in place: it may be a hard link to cargo's own output.
	rm -f $(WASM) && cp $(WASM_OZ) $(WASM)

# The filter with a test-only panic switch (feature fault-injection), in its own target dir so it
# never replaces the real artifact: the fail-safe tests show what a VM failure does.
WASM_FAULT := target/fault-injection/wasm32-wasip1/release/mcp_warden_filter.wasm
wasm-fault: $(STAMPS)/rust-targets
	cargo build --release --target wasm32-wasip1 -p mcp-warden-filter --features fault-injection \
		--target-dir target/fault-injection

# The same filter as an Envoy dynamic module (plain Envoy, Envoy Gateway): profile `native`
# (release with panic=unwind, so that every hook can catch a panic instead of aborting Envoy).
native:
	cargo build --profile native -p mcp-warden-native

# The native module with the test-only panic switch, in its own target dir (like wasm-fault).
NATIVE_FAULT := target/fault-injection/native/libmcp_warden.so
native-fault:
	cargo build --profile native -p mcp-warden-native --features fault-injection --target-dir target/fault-injection

# The trust aggregator and its operator CLI (debug profile: shares artifacts with `cargo test`).
aggregator:
	cargo build -p mcp-warden-aggregator --bins

# Release artifacts in dist/: the filter (what Istio downloads and pins by sha256) and the
# aggregator with its CLI. The .wasm is byte for byte the one `make wasm` built and the tests ran.
DIST     := dist

dist: wasm native
	cargo build --profile server -p mcp-warden-aggregator --bins
	@mkdir -p $(DIST)
	cp $(WASM) $(DIST)/mcp_warden_filter.wasm
	cp $(NATIVE) $(DIST)/libmcp_warden.so
	cd $(DIST) && sha256sum mcp_warden_filter.wasm > mcp_warden_filter.wasm.sha256 \
		&& sha256sum libmcp_warden.so > libmcp_warden.so.sha256
	cp target/server/mcp-warden-aggregator target/server/mcp-warden-ctl $(DIST)/
	@cat $(DIST)/mcp_warden_filter.wasm.sha256 $(DIST)/libmcp_warden.so.sha256
	@ls -l $(DIST)/mcp_warden_filter.wasm $(DIST)/libmcp_warden.so

# ---------------------------------------------------------------------------------------------
# Run

run: setup wasm native aggregator
	$(PY) testbed/run.py --host $(HOST)

demo: run

# ---------------------------------------------------------------------------------------------
# Tests

test: setup wasm lint test-unit test-wasm test-integration fuzz-short

lint:
	$(PYTHON) .ci/import_cycles.py core/src filter/src native/src aggregator/src
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p mcp-warden-filter --target wasm32-wasip1 -- -D warnings

# One PostgreSQL server for the run: the replica tests use it, and the aggregator's API suite
# runs a second time on it (one fresh database per test).
test-unit: $(STAMPS)/postgres $(STAMPS)/venv
	$(PY) testbed/postgres.py -- sh -c 'cargo test --workspace && \
		MCP_WARDEN_TEST_BACKEND=postgres cargo test -p mcp-warden-aggregator --test api'

test-wasm: $(STAMPS)/wasm-bindgen
	$(CARGO_WASM_TEST) cargo test -p mcp-warden-core --target wasm32-unknown-unknown

test-integration: setup wasm wasm-fault native native-fault aggregator
	$(PY) -m pytest tests -p no:cacheprovider

# Issue 6: the proxy's cost against Envoy alone, the upstream alone and ContextForge (bench/README.md).
# Setup (first run only, stamped): wrk from apt, oha from crates.io, the rmcp upstream and the probe
# filter (own cargo workspaces under bench/), matplotlib in bench/.venv, ContextForge in
# bench/.venv-contextforge. Measuring takes under 10 minutes; `make bench-failover` measures
# calls-to-trip and failover time (testbed/bench_failover.py, about 2 more minutes).
bench: setup wasm native bench-setup
	$(PY) bench/run.py
	$(PY) bench/tools_list.py

# ---------------------------------------------------------------------------------------------
# Benchmark only

BENCH_PY      := bench/.venv/bin/python
BENCH_CF      := bench/.venv-contextforge
BENCH_CF_PKG  := mcp-contextforge-gateway==1.0.7.post20260921
OHA_VERSION   := 1.16.0

.PHONY: bench-setup bench-build bench-quick bench-failover bench-profile bench-tools-list bench-bounds bench-mesh-scan

bench-setup: $(STAMPS)/bench-apt $(STAMPS)/bench-venv $(STAMPS)/bench-oha $(STAMPS)/bench-contextforge bench-build

# Both crates are their own workspaces (a [workspace] table each): the root workspace ignores them.
bench-build: $(STAMPS)/rust-targets
	cargo build --release --manifest-path bench/upstream/Cargo.toml
	cargo build --release --target wasm32-wasip1 --manifest-path bench/probe-filter/Cargo.toml

$(STAMPS)/bench-apt: | $(STAMPS)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@touch $@

$(STAMPS)/bench-venv: bench/requirements.txt | $(STAMPS)
	test -x $(BENCH_PY) || $(PYTHON) -m venv bench/.venv
	$(BENCH_PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $@

$(STAMPS)/bench-oha: | $(STAMPS)
	test -x bench/.tools/bin/oha || cargo install oha --version $(OHA_VERSION) --locked --root bench/.tools
	@touch $@

# ContextForge is optional: if it cannot be installed, `make bench` runs without it and says why.
# Its circuit-breaker plugin is only in the PyPI sdist (plugins/circuit_breaker), not in the wheel.
$(STAMPS)/bench-contextforge: bench/contextforge/requirements.txt | $(STAMPS)
	{ test -x $(BENCH_CF)/bin/python || $(PYTHON) -m venv $(BENCH_CF); } \
	&& $(BENCH_CF)/bin/pip install --quiet --disable-pip-version-check -r bench/contextforge/requirements.txt \
	&& rm -rf bench/contextforge/sdist bench/contextforge/pydeps \
	&& mkdir -p bench/contextforge/sdist bench/contextforge/pydeps/plugins \
	&& $(BENCH_CF)/bin/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		-d bench/contextforge/sdist $(BENCH_CF_PKG) \
	&& tar -xzf bench/contextforge/sdist/*.tar.gz -C bench/contextforge/sdist \
	&& cp -r bench/contextforge/sdist/*/plugins/circuit_breaker bench/contextforge/pydeps/plugins/ \
	&& touch bench/contextforge/pydeps/plugins/__init__.py \
	&& touch $@ \
	|| echo "ContextForge could not be installed: make bench runs without it (see the results file)"

# A smoke run of bench/run.py (one workload, 16 connections, 1 s cells, no ContextForge).
bench-quick: setup wasm native bench-setup
	$(PY) bench/run.py --quick --no-contextforge --out $(or $(BENCH_OUT),/tmp/mcp-warden-bench)

bench-failover: setup wasm
	$(PY) testbed/bench_failover.py
	$(PY) testbed/bench_session_failover.py
	$(PY) testbed/bench_safe_calls.py

# Only the cost breakdown: probe filters and a perf split of Envoy's CPU (about 1.5 minutes).
bench-profile: setup wasm bench-setup
	$(PY) bench/run.py --phases profile,perf --out $(or $(BENCH_OUT),/tmp/mcp-warden-bench)

# Issue 5: a tools/list of 100 real tools through Envoy alone and mcp-warden with inspection on and
# off (bench/tools_list.py, about 1.5 min); writes docs/results/bench-tools-list-DATE.md.
bench-tools-list: setup wasm
	$(PY) bench/tools_list.py $(if $(BENCH_OUT),--out $(BENCH_OUT))

# The aggregator's mesh-wide scan: definitions scanned per second through POST /v1/definitions
# (bench/mesh_scan.py, release build, under a minute); writes docs/results/mesh-scan-DATE.md.
bench-mesh-scan: $(STAMPS)/venv
	cargo build --release -p mcp-warden-aggregator --bins
	$(PY) bench/mesh_scan.py $(if $(BENCH_OUT),--out $(BENCH_OUT))

# Issue 7: Envoy's and the wasm VMs' memory and the session records that survive at 10,000 and
# 100,000 sessions, and with 10,000 servers (bench/bounds.py, 3 to 6 minutes); writes
# docs/results/bounds-DATE.md.
bench-bounds: setup wasm $(STAMPS)/bench-apt bench-build
	$(PY) bench/bounds.py $(if $(BENCH_OUT),--out $(BENCH_OUT))

# ---------------------------------------------------------------------------------------------
# Chaos (issue 7): steady load from raw and SDK agents while the primaries flap, dribble, reset,
# answer garbage and 5xx, the aggregator dies, stalls and restarts, and Envoy takes listener
# pushes; asserts well-formed answers within deadlines, no panic, converging breakers and no lost
# acknowledged write, and writes its table to docs/results/chaos.md. Bounded (about 4 minutes).
# `make test` runs a short form (tests/integration/test_chaos.py).

chaos: setup wasm aggregator
	$(PY) tests/chaos/chaos.py --out docs/results/chaos.md

# ---------------------------------------------------------------------------------------------
# Fuzzing (issue 7): cargo-fuzz targets for every parser of core that reads untrusted input, in
# fuzz/ (its own cargo workspace). Each target runs FUZZ_SECONDS on the committed seeds
# (fuzz/seeds/<t>), the saved crashes (fuzz/regressions/<t>) and what earlier runs found
# (fuzz/corpus/<t>, not committed), with the JSON/MCP/SSE dictionary fuzz/mcp.dict; a crash
# lands in fuzz/artifacts/<t>/ (the other targets still run, then `make fuzz` fails).
# cargo-fuzz needs nightly's -Z flags: the machine's stable toolchain takes them with
# RUSTC_BOOTSTRAP=1 (no other toolchain can be installed here).

FUZZ_SECONDS       ?= 30
FUZZ_TARGETS       := config jsonrpc_request jsonrpc_response sse classify breaker_codec trust_wire learn_tools degrade inspect_tools_list
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_ENV           := RUSTC_BOOTSTRAP=1 PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH"

$(STAMPS)/cargo-fuzz: | $(STAMPS)
	test -x $(TOOLS)/bin/cargo-fuzz || \
		cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(TOOLS)
	@touch $@

fuzz: $(STAMPS)/cargo-fuzz
	cd fuzz && $(FUZZ_ENV) cargo fuzz build
	@mkdir -p fuzz/artifacts; failed=; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; log=artifacts/$$t.log; \
		dirs="corpus/$$t seeds/$$t"; test -d fuzz/regressions/$$t && dirs="$$dirs regressions/$$t"; \
		dict=-dict=mcp.dict; test $$t = breaker_codec && dict=; \
		if (cd fuzz && $(FUZZ_ENV) cargo fuzz run $$t $$dirs -- -max_total_time=$(FUZZ_SECONDS) $$dict \
				-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >$$log 2>&1); then \
			echo "fuzz $$t: $$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' fuzz/$$log)"; \
		else \
			tail -n 30 fuzz/$$log; echo "fuzz $$t: CRASH (input in fuzz/artifacts/$$t/, log fuzz/$$log)"; \
			failed="$$failed $$t"; \
		fi; \
	done; test -z "$$failed" || { echo "crashed:$$failed"; exit 1; }

# 5 s per target, to add to `make test`: about 1 minute once built (a first build takes ~5 min).
fuzz-short:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=5

clean:
	cargo clean
	rm -rf $(STAMPS)
