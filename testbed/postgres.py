"""A throwaway PostgreSQL server for tests and benchmarks: Debian's server binaries, `initdb`
into a temporary directory, `pg_ctl` on a free loopback port, run as a non-root user (created
if the tests run as root), stopped by its PID.

As a command, it runs another command with the server up and its URL in MCP_WARDEN_TEST_PG
(the Rust test harness makes one database per test on it):

    python testbed/postgres.py -- cargo test -p mcp-warden-aggregator --test api
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The account the server runs as when the tests run as root (PostgreSQL refuses root).
PG_USER = "mcp-warden-pg"
ENV_URL = "MCP_WARDEN_TEST_PG"


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: install Debian's `postgresql` package "
                           "(`make setup` does)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user() -> pwd.struct_passwd | None:
    """The non-root account to run the server as (None when not root: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)


def make_certificates(dir: Path, server_names: list[str]) -> None:
    """A test CA (`ca.pem`), a server certificate it signed for `server_names` (DNS names)
    (`server.pem`, `server.key`), and an unrelated CA (`other-ca.pem`), with the openssl
    command (Debian's postgresql depends on it through ssl-cert)."""
    dir.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=dir)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=mcp-warden test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={server_names[0]}")
    (dir / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join('DNS:' + n for n in server_names)}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


class Postgres:
    """One server: `start()`, `url(dbname)`, `create_database(name)`, `stop()`. With
    `tls_names`, it serves TLS with a certificate for those names from a test CA whose
    certificate is `ca_file` (see `make_certificates`)."""

    def __init__(self, tls_names: list[str] | None = None) -> None:
        self.tls_names = tls_names
        self.bindir = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="mcp-warden-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self.pid: int | None = None
        self.user = _ensure_user()

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        def demote():
            if self.user:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)
        return subprocess.run(args, preexec_fn=demote if self.user else None, check=True, capture_output=True,
                              cwd=self.dir, **kw)

    def start(self, timeout: float = 30.0) -> "Postgres":
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "--no-sync", "-E", "UTF8", "--locale=C"])
        if self.tls_names:
            make_certificates(self.tls_dir, self.tls_names)
            for f in self.tls_dir.iterdir():
                if self.user:
                    os.chown(f, self.user.pw_uid, self.user.pw_gid)
                os.chmod(f, 0o600 if f.suffix == ".key" else 0o644)
            if self.user:
                os.chown(self.tls_dir, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.resume(timeout)
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = self._run([str(self.bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", "postgres", "-d", dbname, "-c", sql])
        return out.stdout.decode()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pause(self) -> None:
        """Stops the server (fast shutdown: its connections are cut), keeping its data and port."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        self.pid = None

    def resume(self, timeout: float = 30.0) -> None:
        """Starts the (initialised or paused) server on its port."""
        # Loopback only; the socket directory is ours; fsync off: a test server, PostgreSQL
        # itself is never killed by the tests (the aggregator replicas are).
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB")
        if self.tls_names:
            opts += (f" -c ssl=on -c ssl_cert_file={self.tls_dir / 'server.pem'}"
                     f" -c ssl_key_file={self.tls_dir / 'server.key'}")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                   "-o", opts, "-w", "-t", str(int(timeout)), "start"])
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stops the server by its PID (SIGINT: fast shutdown), then removes its directory."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGINT)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    os.kill(self.pid, 0)
                    time.sleep(0.05)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print(__doc__)
        return 2
    pg = Postgres().start()
    try:
        env = dict(os.environ, **{ENV_URL: pg.url()})
        return subprocess.run(argv, env=env).returncode
    finally:
        pg.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
