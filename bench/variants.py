"""The systems `make bench` compares, each started on loopback and stopped by PID:

* the rmcp upstream (`bench/upstream`), called directly: the limit;
* Envoy without the wasm filter (the baseline), with mcp-warden (breakers closed; primary's
  breaker open and traffic on the fallback), and with the probe filter (`bench/probe-filter`);
* IBM ContextForge from PyPI, with its circuit-breaker plugin, in `bench/.venv-contextforge`.

Envoy configurations come from `testbed/warden_testbed.bootstrap()`; the baseline is that
bootstrap with the wasm filter removed and the routes pointed at a fixed cluster.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "testbed"))

from warden_testbed import WASM, Envoy, bootstrap, free_port, http_json, stop_process, wait_until  # noqa: E402

UPSTREAM_BIN = BENCH / "upstream" / "target" / "release" / "mcp-bench-upstream"
PROBE_WASM = BENCH / "probe-filter" / "target" / "wasm32-wasip1" / "release" / "mcp_bench_probe.wasm"
CF_VENV = BENCH / ".venv-contextforge"
CF_PYDEPS = BENCH / "contextforge" / "pydeps"  # `plugins/` from the PyPI sdist (circuit breaker)
CF_PLUGINS = BENCH / "contextforge" / "plugins.yaml"

AGENT_HOST = "bench.mcp.local"
SCALE_HOST = "target.bench.mcp.local"
LONG_OPEN_MS = 3_600_000  # the dead primary stays open for the whole run
_LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")


# ------------------------------------------------------------------------------------------------
# The upstream


@dataclass
class Upstream:
    proc: subprocess.Popen | None = None
    port: int = 0

    def start(self) -> "Upstream":
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(UPSTREAM_BIN), "--listen", f"127.0.0.1:{self.port}",
             "--allowed-host", AGENT_HOST, "--allowed-host", SCALE_HOST],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"upstream did not start: {line!r}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


# ------------------------------------------------------------------------------------------------
# Envoy variants


def warden_servers(primary: str, fallbacks: list[str], host: str = AGENT_HOST) -> list[dict]:
    return [{"name": "bench", "match": {"authority": host}, "primary": primary, "fallbacks": fallbacks}]


def scale_servers(n: int, target_first: bool = False) -> list[dict]:
    """`n` servers: n-1 fillers with their own authorities, and the one the load calls
    (`target.bench.mcp.local`), last unless `target_first`. All point at the same two clusters."""
    fillers = [
        {"name": f"filler-{i:06d}", "match": {"authority": f"f{i:06d}.filler.mcp.local"},
         "primary": "upstream", "fallbacks": ["upstream_b"]}
        for i in range(n - 1)
    ]
    target = {"name": "target", "match": {"authority": SCALE_HOST}, "primary": "upstream", "fallbacks": ["upstream_b"]}
    return [target] + fillers if target_first else fillers + [target]


def warden_bootstrap(upstream_port: int, dead_port: int, plugin: dict, wasm_path: Path = WASM, host: str = "wasm") -> dict:
    """mcp-warden in Envoy, as the .wasm (`host="wasm"`) or the native dynamic module ("native")."""
    return bootstrap(
        listen_port=free_port(),
        admin_port=free_port(),
        clusters={
            "upstream": ("127.0.0.1", upstream_port),
            "upstream_b": ("127.0.0.1", upstream_port),
            "dead": ("127.0.0.1", dead_port),
        },
        plugin=plugin,
        wasm_path=wasm_path,
        host=host,
    )


def baseline_bootstrap(upstream_port: int, dead_port: int) -> dict:
    """The same bootstrap without the wasm filter: the routes keep their matchers' shape and
    timeouts but go to a fixed cluster (nothing sets the route header any more)."""
    cfg = warden_bootstrap(upstream_port, dead_port, {"servers": warden_servers("upstream", ["upstream_b"])})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    routes = []
    for r in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        if "route" not in r:
            continue  # the 404 for unknown servers: every request now routes
        r = copy.deepcopy(r)
        r["route"].pop("cluster_header", None)
        r["route"]["cluster"] = "upstream"
        headers = [h for h in r["match"].get("headers", []) if h["name"] != "x-mcp-warden-cluster"]
        if headers:
            r["match"]["headers"] = headers
        else:
            r["match"].pop("headers", None)
        routes.append(r)
    hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
    return cfg


def probe_plugin(**switches) -> dict:
    return {"cluster": "upstream", **switches}


@dataclass
class EnvoyVariant:
    name: str
    config: dict
    envoy: Envoy | None = None
    ready_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.envoy and self.envoy.proc
        return self.envoy.proc.pid

    @property
    def admin(self) -> str:
        assert self.envoy
        return f"http://127.0.0.1:{self.envoy.admin_port}"

    @property
    def base_url(self) -> str:
        assert self.envoy
        return f"http://127.0.0.1:{self.envoy.listen_port}"

    def start(self, concurrency: int, timeout: float = 120.0, log_level: str = "warning") -> "EnvoyVariant":
        """Starts Envoy and measures process start -> admin /ready (polled every 5 ms)."""
        self.envoy = Envoy(self.config, concurrency=concurrency, log_level=log_level)
        t0 = time.monotonic()
        self.envoy.start(wait=False)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.envoy.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: envoy exited:\n{self.envoy.log_tail()}")
            try:
                status, _, _ = http_json("GET", f"{self.admin}/ready", timeout=0.5)
                if status == 200:
                    self.ready_s = time.monotonic() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.005)
        raise TimeoutError(f"{self.name}: envoy not ready after {timeout} s:\n{self.envoy.log_tail()}")

    def log_milestones(self) -> dict:
        """Seconds from Envoy's first log line to the filter's first and last `configured`
        line (one per VM) and to the `all clusters initialized` line (needs log level info)."""
        stamps = []
        first = configured_first = configured_last = None
        for line in (self.envoy.log_text() if self.envoy else "").splitlines():
            m = _LOG_TS.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            first = t if first is None else first
            if "mcp-warden: configured" in line:
                configured_first = t if configured_first is None else configured_first
                configured_last = t
                stamps.append(t)
        rel = lambda t: None if t is None or first is None else round(t - first, 3)  # noqa: E731
        return {"vms_configured": len(stamps), "first_vm_configured_s": rel(configured_first),
                "last_vm_configured_s": rel(configured_last)}

    def memory(self) -> dict:
        _, _, body = http_json("GET", f"{self.admin}/memory")
        out = {k: int(v) for k, v in (body or {}).items() if str(v).isdigit()}
        out["rss"] = _rss(self.pid)
        stats = self.envoy.stats("wasm") if self.envoy else {}
        out["wasm_vms"] = stats.get("wasm.envoy.wasm.runtime.v8.active", 0)
        return out

    def stop(self) -> None:
        if self.envoy:
            self.envoy.stop()


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------------------------------------
# ContextForge


CF_ENV = {
    # What is switched on or off, as reported: the gateway's defaults except the lines marked.
    "MCPGATEWAY_UI_ENABLED": "false",  # off: admin UI (not on the request path)
    "MCPGATEWAY_ADMIN_API_ENABLED": "true",  # on: needed to register the upstream
    "PLUGINS_ENABLED": "true",  # on: plugin framework
    "SSRF_ALLOW_LOCALHOST": "true",  # the upstream is on loopback
    "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
    "COMPRESSION_ENABLED": "false",  # off: Envoy does not compress either
    "RATE_LIMITING_ENABLED": "false",  # off: 100 MCP calls/min per user by default, and it
    "RATE_LIMIT_LOCKOUT_ENABLED": "false",  # locks the account after 5 violations: load would only see 429s
    "LOG_LEVEL": "ERROR",
    "DEV_MODE": "true",  # accepts SQLite without a warning
    "PLATFORM_ADMIN_EMAIL": "admin@example.com",
}


@dataclass
class ContextForge:
    upstream_port: int
    port: int = 0
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    token: str = ""
    ready_s: float | None = None
    env: dict | None = None
    servers: dict = field(default_factory=dict)  # upstream path -> (virtual server id, tool prefix)
    breaker_check: str = ""

    @staticmethod
    def available() -> tuple[bool, str]:
        exe = CF_VENV / "bin" / "mcpgateway"
        if not exe.exists():
            return False, f"{exe} missing (make bench installs it: pip install mcp-contextforge-gateway)"
        if not (CF_PYDEPS / "plugins" / "circuit_breaker" / "circuit_breaker.py").exists():
            return False, f"circuit breaker plugin missing under {CF_PYDEPS} (make bench extracts it from the PyPI sdist)"
        return True, ""

    def spawn(self) -> "ContextForge":
        """Starts the gateway (it takes 15-30 s to migrate its database and come up)."""
        self.port = free_port()
        # SQLite on tmpfs: the gateway writes to its database on every call, and a disk's fsync
        # would be measured instead of the gateway.
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-cf-", dir=shm))
        password = "Bench-" + secrets.token_hex(8) + "-Pw1!"
        self.env = {
            **CF_ENV,
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "AUTH_ENCRYPTION_SECRET": secrets.token_hex(32),
            "PLATFORM_ADMIN_PASSWORD": password,
            "BASIC_AUTH_PASSWORD": password,
            "DATABASE_URL": f"sqlite:///{self.workdir}/mcp.db",
            "PLUGINS_CONFIG_FILE": str(CF_PLUGINS),
        }
        env = {**os.environ, **self.env, "PYTHONPATH": str(CF_PYDEPS), "HOME": str(self.workdir)}
        log = open(self.workdir / "gateway.log", "ab")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(CF_VENV / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env, start_new_session=True,
        )
        log.close()
        return self

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.workdir / "gateway.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_and_register(self, timeout: float = 120.0) -> "ContextForge":
        """Waits for /health, registers the upstream as a gateway and makes a virtual server
        with all its tools; the agent then calls /servers/<id>/mcp with a bearer token."""
        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ContextForge exited:\n{self.log_tail()}")
            return http_json("GET", f"{self.base_url}/health", timeout=1)[0] == 200

        wait_until(healthy, timeout, "ContextForge /health", interval=0.2)
        self.ready_s = time.monotonic() - self._t0
        out = subprocess.run(
            [str(CF_VENV / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username",
             "admin@example.com", "--exp", "120", "--secret", self.env["JWT_SECRET_KEY"]],
            capture_output=True, text=True, timeout=60, cwd=self.workdir,
            env={**os.environ, **self.env, "PYTHONPATH": str(CF_PYDEPS)},
        )
        self.token = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if not self.token:
            raise RuntimeError(f"no ContextForge token: {out.stderr[-500:]}")
        auth = {"Authorization": f"Bearer {self.token}"}
        # Two gateways on the same upstream: its JSON endpoint and its SSE endpoint, each behind
        # its own virtual server of 100 tools (ContextForge answers the agent in JSON either way).
        for name, path in (("bench", "/mcp"), ("benchsse", "/sse")):
            status, _, gw = http_json("POST", f"{self.base_url}/gateways", {
                "name": name, "url": f"http://127.0.0.1:{self.upstream_port}{path}", "transport": "STREAMABLEHTTP",
            }, headers={**auth, "Content-Type": "application/json"}, timeout=60)
            if status not in (200, 201):
                raise RuntimeError(f"ContextForge refused gateway {name}: {status} {str(gw)[:500]}")
            tools: list = []

            def listed(gw_id=gw["id"]):
                nonlocal tools
                _, _, body = http_json("GET", f"{self.base_url}/tools?limit=0", headers=auth, timeout=30)
                tools = [t for t in (body if isinstance(body, list) else []) if t.get("gatewayId") == gw_id]
                return len(tools) >= 100

            wait_until(listed, 60, f"ContextForge to list gateway {name}'s 100 tools", interval=0.5)
            status, _, srv = http_json("POST", f"{self.base_url}/servers", {
                "server": {"name": f"{name}srv", "associated_tools": [t["id"] for t in tools]},
            }, headers={**auth, "Content-Type": "application/json"}, timeout=60)
            if status not in (200, 201):
                raise RuntimeError(f"ContextForge refused the virtual server: {status} {str(srv)[:500]}")
            small = next(t["name"] for t in tools if t.get("originalName") == "small")
            self.servers[path] = (srv["id"], small[: -len("small")])
        self.breaker_check = self._check_breaker(auth)
        return self

    def _check_breaker(self, auth: dict) -> str:
        """Proves the CircuitBreaker plugin is loaded and enforcing: calls the upstream's `fail`
        tool (a tool error) until ContextForge stops forwarding it (bounded: 12 calls)."""
        sid, prefix = self.servers["/mcp"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": prefix + "fail", "arguments": {}}}
        headers = {**auth, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": "2025-11-25"}
        for n in range(1, 13):
            _, _, msg = http_json("POST", f"{self.base_url}/servers/{sid}/mcp", body, headers=headers, timeout=30)
            text = json.dumps(msg)[:400]
            if "failed on purpose" not in text:
                return f"blocked after {n - 1} failing calls: {text[:300]}"
        raise RuntimeError("the CircuitBreaker plugin never blocked the failing tool: is it loaded?")

    def env_public(self) -> dict:
        """The environment it ran with, secrets left out."""
        hidden = {"JWT_SECRET_KEY", "AUTH_ENCRYPTION_SECRET", "PLATFORM_ADMIN_PASSWORD", "BASIC_AUTH_PASSWORD", "DATABASE_URL"}
        return {k: v for k, v in (self.env or {}).items() if k not in hidden}

    def target_paths(self) -> dict:
        """Workload path -> this gateway's path for it."""
        return {path: f"/servers/{sid}/mcp" for path, (sid, _) in self.servers.items()}

    def tool_prefix(self, path: str) -> str:
        return self.servers[path][1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        if self.workdir:
            for p in sorted(self.workdir.glob("**/*"), reverse=True):
                try:
                    p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
                except OSError:
                    pass
            try:
                self.workdir.rmdir()
            except OSError:
                pass


def json_dumps(o) -> str:
    return json.dumps(o, indent=2, sort_keys=False)
