"""Plugin configuration is validated once at load; Envoy configs the repo ships are valid."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from warden_testbed import NATIVE, ROOT, WASM, Envoy, bootstrap, envoy_bin, free_port

GOOD_SERVER = {"name": "s", "match": {"path_prefix": "/mcp"}, "primary": "p", "fallbacks": ["f"]}

BAD = [
    ({"servers": [GOOD_SERVER], "breaker": {"failure_rate_threshold": 150}}, "breaker.failure_rate_threshold"),
    ({"servers": [dict(GOOD_SERVER, fallbacks=["p"])]}, "servers[0].fallbacks[0]"),
    ({"servers": [GOOD_SERVER], "clusters": {"typo": {}}}, "clusters.typo"),
    ({"servers": [GOOD_SERVER], "breaker": {"windw_size": 3}}, "breaker.windw_size"),
    ({"servers": []}, "servers"),
]


# What Envoy says when the filter refuses its configuration, per host.
REFUSED = {"wasm": "Unable to create Wasm plugin mcp_warden",
           "native": "Failed to create filter config: Failed to initialize dynamic module"}


def start_with(plugin, host: str = "wasm") -> Envoy:
    return Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(),
                           clusters={"p": ("127.0.0.1", free_port()), "f": ("127.0.0.1", free_port())},
                           plugin=plugin, host=host), concurrency=1)


@pytest.mark.both_hosts
@pytest.mark.parametrize("plugin,field", BAD, ids=[b[1] for b in BAD])
def test_bad_plugin_config_is_refused_with_the_field_named(plugin, field, warden_host):
    envoy = start_with(plugin, warden_host)
    envoy.start(wait=False)
    try:
        rc = envoy.proc.wait(60)
    finally:
        envoy.stop()
    log = envoy.log_text()
    # Envoy does not serve with a half-read configuration: it refuses to start at all.
    assert rc != 0, log[-2000:]
    assert f"invalid plugin configuration: field `{field}`" in log, log[-3000:]
    assert REFUSED[warden_host] in log


@pytest.mark.both_hosts
def test_unparseable_plugin_config_is_refused(warden_host):
    envoy = start_with("{ this is not json", warden_host)
    envoy.start(wait=False)
    try:
        rc = envoy.proc.wait(60)
    finally:
        envoy.stop()
    assert rc != 0
    assert "invalid plugin configuration" in envoy.log_text()
    assert REFUSED[warden_host] in envoy.log_text()


def test_good_config_loads_in_every_vm():
    envoy = start_with({"servers": [GOOD_SERVER]})
    envoy.concurrency = 2
    envoy.start()
    try:
        # Two VMs on the main thread and one per worker each configure once.
        assert envoy.log_text().count("mcp-warden: configured 1 servers over 2 clusters") == 4
    finally:
        envoy.stop()


def shipped_envoy_configs() -> list[Path]:
    return sorted((ROOT / "envoy").glob("*.yaml"))


@pytest.mark.parametrize("path", shipped_envoy_configs(), ids=lambda p: p.name)
def test_shipped_envoy_configs_validate(path: Path, tmp_path: Path):
    """`envoy --mode validate` on every Envoy config in envoy/, with the built filter, and the
    plugin configuration inside it accepted by the filter's own parser (Envoy loads it)."""
    doc = yaml.safe_load(path.read_text())
    text = path.read_text().replace("/etc/envoy/mcp_warden_filter.wasm", str(WASM))
    cfg = tmp_path / path.name
    cfg.write_text(text)
    # The native module's config (envoy-native.yaml) loads libmcp_warden.so from the search path.
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE.parent)}
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "configuration '" in out.stdout + out.stderr and "OK" in out.stdout + out.stderr
    # The embedded plugin configuration names clusters the file defines.
    clusters = {c["name"] for c in doc["static_resources"]["clusters"]}
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
    if "envoy.filters.http.dynamic_modules" in filters:
        plugin = json.loads(filters["envoy.filters.http.dynamic_modules"]["filter_config"]["value"])
    else:
        plugin = json.loads(filters["envoy.filters.http.wasm"]["config"]["configuration"]["value"])
    for s in plugin["servers"]:
        assert {s["primary"], *s.get("fallbacks", [])} <= clusters


@pytest.mark.both_hosts
def test_testbed_bootstrap_validates(tmp_path: Path, warden_host):
    envoy = start_with({"servers": [GOOD_SERVER]}, warden_host)
    out = envoy.validate()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
