"""Transparency, measured with the official MCP conformance suite: every server scenario gets the
same verdict through the sidecar as directly, for servers built on two different SDKs."""

from __future__ import annotations

import pytest
from conformance.conformance import SERVERS, free_port, run_conformance, stop_process
from warden_testbed import Envoy, bootstrap


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_same_verdicts_through_the_sidecar(server, tmp_path):
    start, sdk = SERVERS[server]
    port = free_port()
    proc = start(port)
    envoy = None
    try:
        envoy = Envoy(bootstrap(
            listen_port=free_port(),
            admin_port=free_port(),
            clusters={"conformance_primary": ("127.0.0.1", port)},
            plugin={"servers": [{"name": "conformance", "match": {"path_prefix": "/mcp"},
                                 "primary": "conformance_primary"}]},
        ), concurrency=2).start()
        direct = run_conformance(f"http://127.0.0.1:{port}/mcp", tmp_path / "direct")
        via = run_conformance(f"http://127.0.0.1:{envoy.listen_port}/mcp", tmp_path / "sidecar")
        assert len(direct) >= 30, direct
        differing = {s: (direct.get(s), via.get(s)) for s in set(direct) | set(via) if direct.get(s) != via.get(s)}
        assert differing == {}, f"{server} ({sdk}): verdicts differ through the sidecar: {differing}"
        # The filter saw and judged the traffic, and held nothing against a conformant server.
        stats = envoy.stats("wasmcustom.mcp_warden.cluster.conformance_primary")
        assert stats["wasmcustom.mcp_warden.cluster.conformance_primary.requests"] >= 30
        assert stats["wasmcustom.mcp_warden.cluster.conformance_primary.breaker.opened"] == 0
        print(server, {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1]: v for k, v in stats.items() if v})
    finally:
        if envoy:
            envoy.stop()
        stop_process(proc)
