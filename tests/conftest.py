"""Shared fixtures: real MCP servers (official SDK) and real Envoy sidecars on free loopback ports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testbed"))
sys.path.insert(0, str(ROOT / "tests"))

from warden_testbed import HOSTS, NATIVE, WASM, Envoy, bootstrap, demo_servers, free_port, spawn_demo_servers  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "both_hosts: run the test against the wasm filter and the native module (Envoy dynamic "
        "module); unmarked tests run against the wasm filter only",
    )


def pytest_addoption(parser):
    parser.addoption("--warden-host", choices=["default", *HOSTS], default="default",
                     help="run every sidecar test on this host (default: tests marked both_hosts on both, "
                          "the others on wasm)")


def pytest_generate_tests(metafunc):
    """One suite, two hosts: a test marked `both_hosts` that builds sidecars runs once per host."""
    if "warden_host" not in metafunc.fixturenames:
        return
    forced = metafunc.config.getoption("--warden-host")
    if forced != "default":
        metafunc.parametrize("warden_host", [forced], indirect=True)
    elif metafunc.definition.get_closest_marker("both_hosts"):
        metafunc.parametrize("warden_host", HOSTS, indirect=True)


@pytest.fixture
def warden_host(request) -> str:
    """The filter's host for this test: "wasm" (default) or "native"."""
    host = getattr(request, "param", "wasm")
    artifact = NATIVE if host == "native" else WASM
    if not artifact.exists():
        pytest.fail(f"{artifact} is missing: run `make {'native' if host == 'native' else 'wasm'}`")
    return host


@pytest.fixture(scope="session")
def servers():
    """Four fault-switchable MCP servers: SSE/stateful and JSON/stateless, primary and fallback."""
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm`")
    started = spawn_demo_servers()
    try:
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the session (testbed/postgres.py); tests create their
    own databases on it."""
    from postgres import Postgres
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(autouse=True)
def healthy_servers(request):
    """Every test starts and ends with healthy servers and zeroed request counters."""
    if "servers" not in request.fixturenames:
        yield
        return
    servers = request.getfixturevalue("servers")
    for s in servers.values():
        s.fault("healthy")
        s.reset_stats()
    yield
    for s in servers.values():
        s.fault("healthy")


@pytest.fixture
def sidecar(servers, warden_host):
    """Factory: a fresh Envoy (fresh breakers) with the filter (on `warden_host`) in front of
    the servers."""
    started: list[Envoy] = []

    def make(*, breaker: dict | None = None, concurrency: int = 2, route_timeout_s: float = 15.0,
             plugin: dict | None = None, **plugin_extra) -> Envoy:
        cfg = plugin or {"servers": demo_servers(), **plugin_extra}
        if breaker:
            cfg["breaker"] = breaker
        envoy = Envoy(
            bootstrap(
                listen_port=free_port(),
                admin_port=free_port(),
                clusters={n: ("127.0.0.1", s.port) for n, s in servers.items()},
                plugin=cfg,
                route_timeout_s=route_timeout_s,
                host=warden_host,
            ),
            concurrency=concurrency,
        )
        started.append(envoy)
        return envoy.start()

    yield make
    for e in started:
        e.stop()
