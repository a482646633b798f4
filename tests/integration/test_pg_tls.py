"""The aggregator on a PostgreSQL that serves TLS (Debian's server with a test CA's certificate
for the name `db.internal` only), with libpq's `sslmode` and `sslrootcert` in the URL: the
connection is encrypted (the server's `pg_stat_ssl` says so), the certificate and its name are
checked when the URL asks for it, and a server the URL does not trust is refused at start with
the reason in the log.
"""

from __future__ import annotations

import uuid

import pytest

from postgres import Postgres
from warden_testbed import TESTBED_TOKENS, Aggregator

OPERATOR = "operator-token-testbed"


@pytest.fixture(scope="module")
def tls_pg():
    pg = Postgres(tls_names=["db.internal"]).start()
    try:
        yield pg
    finally:
        pg.stop()


def database(pg: Postgres) -> str:
    name = f"tls_{uuid.uuid4().hex[:12]}"
    pg.create_database(name)
    return name


def url(pg: Postgres, db: str, query: str, host: str = "127.0.0.1") -> str:
    return f"postgres://postgres@{host}:{pg.port}/{db}?{query}"


def encrypted_sessions(pg: Postgres, db: str) -> list[str]:
    """`pg_stat_ssl.ssl` of each of the aggregator's connections to `db`."""
    out = pg.psql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                  f"WHERE a.application_name = 'mcp-warden-aggregator' AND a.datname = '{db}'")
    return out.split()


def serves(pg: Postgres, db_url: str) -> Aggregator:
    agg = Aggregator(tokens=list(TESTBED_TOKENS), db_url=db_url).start()
    status, _, _ = agg.api("POST", "/v1/servers/tls_probe/quarantine", {"reason": "written over TLS"}, token=OPERATOR)
    assert status == 200, agg.log_text()[-2000:]
    return agg


def refused(db_url: str) -> str:
    return Aggregator(tokens=list(TESTBED_TOKENS), db_url=db_url).refused(timeout=20)


def test_verify_full_checks_the_chain_and_the_name_and_encrypts(tls_pg):
    db = database(tls_pg)
    # The name the certificate holds, reached at the loopback address (libpq's hostaddr).
    agg = serves(tls_pg, url(tls_pg, db, f"hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={tls_pg.ca_file}",
                             host="db.internal"))
    try:
        sessions = encrypted_sessions(tls_pg, db)
        assert sessions and all(s == "t" for s in sessions), sessions
        assert "certificate and name checked" in agg.log_text()
    finally:
        agg.stop()


def test_a_certificate_for_another_name_passes_verify_ca_but_not_verify_full(tls_pg):
    db = database(tls_pg)
    log = refused(url(tls_pg, db, f"sslmode=verify-full&sslrootcert={tls_pg.ca_file}"))
    assert "certificate" in log.lower() and "name" in log.lower(), log[-2000:]
    agg = serves(tls_pg, url(tls_pg, db, f"sslmode=verify-ca&sslrootcert={tls_pg.ca_file}"))
    try:
        assert all(s == "t" for s in encrypted_sessions(tls_pg, db))
    finally:
        agg.stop()


def test_a_server_certificate_from_an_untrusted_ca_is_refused(tls_pg):
    db = database(tls_pg)
    other = tls_pg.tls_dir / "other-ca.pem"
    log = refused(url(tls_pg, db, f"sslmode=verify-ca&sslrootcert={other}"))
    assert "UnknownIssuer" in log or "unknown issuer" in log.lower(), log[-2000:]


def test_require_encrypts_without_checking_as_libpq_does(tls_pg):
    db = database(tls_pg)
    agg = serves(tls_pg, url(tls_pg, db, "sslmode=require"))
    try:
        assert all(s == "t" for s in encrypted_sessions(tls_pg, db))
        assert "certificate not checked" in agg.log_text()
    finally:
        agg.stop()


def test_a_wrong_sslmode_is_refused_naming_it(tls_pg):
    log = refused(url(tls_pg, database(tls_pg), "sslmode=verify"))
    assert "sslmode=verify is not one of" in log, log[-2000:]
