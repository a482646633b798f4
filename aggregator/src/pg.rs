//! PostgreSQL persistence: versioned migrations, the replicas' locks, and one function per read
//! or write, mirroring [`crate::store`] (SQLite) row for row. Callers pass a transaction (or the
//! client for reads); nothing here commits.
//!
//! Replicas share one database and serialise their writes with one transaction-level advisory
//! lock ([`lock_for_write`]): a write sees every write committed before it, so batch ids, the
//! audit chain and the published version follow one order, as with SQLite's single writer.
//! Each write bumps the `changes` counter; a replica whose counter is behind reloads its cache.

use crate::audit;
use crate::policy::{self, BudgetEntry, Change, KindsEntry, Phase, SeenEntry, Spent};
use crate::state::{ServerState, State, Totals};
use crate::admission::Provisional;
use crate::store::{self, state_str};
use crate::validate::{truncate, MAX_EVIDENCE};
use crate::views::{
    AuditAction, AuditEntry, AuditVerification, DefinitionScan, FlagRecord, HeldChange, HistorySample, QuarantineInfo,
    RaterRating, SecurityEventRecord, ToolApprovalRecord,
};
use mcp_warden_core::trust::wire::{FlagRequest, SecurityEvent, Severity, Subject, TrustState};
use mcp_warden_core::trust::{Evidence, SecurityState};
use postgres::{GenericClient, Row, Transaction};
use tracing::info;

use crate::db_error::Error;

/// Advisory lock keys (one 64-bit space per database; "mcpw" in the high bits).
const KEY_BASE: i64 = 0x6d63_7077 << 16;
/// Held (transaction-level) while migrating: a second replica starting at once waits, then finds
/// the schema current.
const MIGRATE_LOCK: i64 = KEY_BASE + 1;
/// Held (transaction-level) by every write: one writer at a time across replicas.
const WRITE_LOCK: i64 = KEY_BASE + 2;
/// Held (session-level) by the replica that runs the periodic evaluation.
const LEADER_LOCK: i64 = KEY_BASE + 3;

/// Migrations in order: (version, SQL). Each runs once, in the transaction that records it.
const MIGRATIONS: &[(i64, &str)] = &[(1, MIGRATION_1), (2, MIGRATION_2), (3, MIGRATION_3), (4, MIGRATION_4)];
pub const SCHEMA_VERSION: i64 = 4;

/// Servers named by fewer sidecar credentials than the admission quorum (see SQLite's table and
/// admission.rs), shared by the replicas so that two sidecars' reports reaching two replicas
/// still make a quorum.
const MIGRATION_4: &str = r#"
CREATE TABLE provisional_servers (
    server   TEXT PRIMARY KEY,
    first_ms BIGINT NOT NULL,
    voices   TEXT NOT NULL,
    held     TEXT NOT NULL
);
"#;

/// Held tool changes, operators' approvals of tool definitions, and the mesh-wide scan of
/// definitions (see SQLite's tables).
const MIGRATION_2: &str = r#"
CREATE TABLE held_changes (
    server          TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    tool            TEXT,
    old_fingerprint TEXT,
    why             TEXT,
    reported_by     TEXT NOT NULL,
    first_ms        BIGINT NOT NULL,
    last_ms         BIGINT NOT NULL,
    reports         BIGINT NOT NULL,
    PRIMARY KEY (server, fingerprint)
);

CREATE TABLE tool_approvals (
    server      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    tool        TEXT,
    approved_by TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (server, fingerprint)
);

CREATE TABLE definition_scans (
    fingerprint TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    tool        TEXT,
    severity    TEXT,
    rules       TEXT NOT NULL,
    scanned_ms  BIGINT NOT NULL
);
CREATE INDEX definition_scans_at ON definition_scans (scanned_ms);
"#;

/// The ingestion policy's durable memory (SQLite creates the same tables on open; see
/// store.rs and policy.rs): the kinds of finding behind a quarantine and a release, and each
/// sidecar credential's spent budgets, shared by the replicas like the rest of the state.
const MIGRATION_3: &str = r#"
CREATE TABLE policy_kinds (
    server TEXT NOT NULL,
    phase  TEXT NOT NULL CHECK (phase IN ('quarantined', 'released')),
    kinds  TEXT NOT NULL,
    at_ms  BIGINT NOT NULL,
    PRIMARY KEY (server, phase)
);
CREATE TABLE policy_budget (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    credential TEXT NOT NULL,
    spent_on   TEXT NOT NULL CHECK (spent_on IN ('penalty', 'new_server')),
    server     TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX policy_budget_at ON policy_budget (at_ms);
CREATE TABLE policy_seen (
    server   TEXT NOT NULL,
    tool     TEXT,
    kind     TEXT NOT NULL,
    severity TEXT NOT NULL,
    at_ms    BIGINT NOT NULL
);
CREATE INDEX policy_seen_server ON policy_seen (server);
CREATE INDEX policy_seen_at ON policy_seen (at_ms);
"#;

/// The schema of SQLite's version 2, in PostgreSQL's types, plus what replicas share: the
/// published scores document (followers serve the leader's bytes) and the counters in `meta`.
const MIGRATION_1: &str = r#"
CREATE TABLE servers (
    name                TEXT PRIMARY KEY,
    first_seen_ms       BIGINT NOT NULL,
    successes           DOUBLE PRECISION NOT NULL,
    failures            DOUBLE PRECISION NOT NULL,
    evidence_ms         BIGINT NOT NULL,
    penalty             DOUBLE PRECISION NOT NULL,
    penalty_ms          BIGINT NOT NULL,
    quarantined         BOOLEAN NOT NULL,
    quarantine_reason   TEXT,
    quarantine_by       TEXT,
    quarantine_ms       BIGINT,
    quarantine_auto     BOOLEAN,
    auto_armed          BOOLEAN NOT NULL,
    released_ms         BIGINT,
    total_success       BIGINT NOT NULL,
    total_failures      BIGINT NOT NULL,
    total_slow          BIGINT NOT NULL,
    latency_count       BIGINT NOT NULL,
    latency_sum_ms      BIGINT NOT NULL,
    last_report_ms      BIGINT
);

-- Idempotency of signal batches across replicas: a resend landing on another replica hits
-- this key.
CREATE TABLE batches (
    token_name  TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    sidecar     TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (token_name, batch_id)
);
CREATE INDEX batches_received ON batches (received_ms);

CREATE TABLE ratings (
    rater        TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('server', 'rater')),
    subject      TEXT NOT NULL,
    value        DOUBLE PRECISION NOT NULL,
    comment      TEXT,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (rater, subject_kind, subject)
);
CREATE INDEX ratings_subject ON ratings (subject_kind, subject);

CREATE TABLE security_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server          TEXT NOT NULL,
    first_ms        BIGINT NOT NULL,
    last_ms         BIGINT NOT NULL,
    reports         BIGINT NOT NULL,
    reported_by     TEXT NOT NULL,
    batch_id        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    tool            TEXT,
    evidence        TEXT,
    old_fingerprint TEXT,
    new_fingerprint TEXT
);
CREATE INDEX security_events_server ON security_events (server, id);

CREATE TABLE flags (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server      TEXT NOT NULL,
    first_ms    BIGINT NOT NULL,
    last_ms     BIGINT NOT NULL,
    reports     BIGINT NOT NULL,
    flagged_by  TEXT NOT NULL,
    severity    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    tool        TEXT,
    description TEXT
);
CREATE INDEX flags_server ON flags (server, id);

CREATE TABLE history (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server TEXT NOT NULL,
    at_ms  BIGINT NOT NULL,
    score  DOUBLE PRECISION NOT NULL,
    state  TEXT NOT NULL
);
CREATE INDEX history_server ON history (server, at_ms);
CREATE INDEX history_at ON history (at_ms);

-- Ids are chosen by the writer (they are part of the hash) under the write lock;
-- meta.audit_issued remembers the highest ever issued.
CREATE TABLE audit (
    id     BIGINT PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    server TEXT NOT NULL,
    reason TEXT NOT NULL,
    score  DOUBLE PRECISION NOT NULL,
    hash   TEXT NOT NULL
);
CREATE INDEX audit_server ON audit (server, id);
CREATE FUNCTION mcp_warden_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION mcp_warden_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION mcp_warden_audit_append_only();

-- The scores document as last published (one row): every replica serves these bytes.
CREATE TABLE publication (
    id       SMALLINT PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL,
    document TEXT NOT NULL
);

INSERT INTO meta (key, value) VALUES ('version', 0), ('changes', 0), ('audit_issued', 0)
    ON CONFLICT (key) DO NOTHING;
"#;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Error> {
    Ok(row.try_get(idx)?)
}

fn bad(what: &str, got: &str) -> Error {
    Error::Invalid(format!("unknown {what} {got:?} in the database"))
}

fn severity(s: &str) -> Result<Severity, Error> {
    match s {
        "low" => Ok(Severity::Low),
        "medium" => Ok(Severity::Medium),
        "high" => Ok(Severity::High),
        "critical" => Ok(Severity::Critical),
        other => Err(bad("severity", other)),
    }
}

fn trust_state(s: &str) -> Result<TrustState, Error> {
    match s {
        "trusted" => Ok(TrustState::Trusted),
        "degraded" => Ok(TrustState::Degraded),
        "quarantined" => Ok(TrustState::Quarantined),
        other => Err(bad("state", other)),
    }
}

/// Brings the schema up to date in one transaction under [`MIGRATE_LOCK`]: replicas starting
/// together migrate once; a database newer than this version is refused.
pub fn migrate(client: &mut postgres::Client) -> Result<(), Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)")?;
    let current: i64 =
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema'", &[])?.map(|r| get(&r, 0)).transpose()?.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "database schema version {current} is not supported by this aggregator (it knows {SCHEMA_VERSION})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[version],
        )?;
        info!(version, "PostgreSQL schema migrated");
    }
    tx.commit()?;
    Ok(())
}

/// Takes the write lock for the rest of the transaction; returns the `changes` counter as it
/// stands once this transaction holds the lock.
pub fn lock_for_write(tx: &mut Transaction<'_>) -> Result<i64, Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    changes(tx)
}

pub fn changes(c: &mut impl GenericClient) -> Result<i64, Error> {
    let row = c.query_one("SELECT value FROM meta WHERE key = 'changes'", &[])?;
    get(&row, 0)
}

/// Counts this write (followers see the counter move and reload).
pub fn bump_changes(tx: &mut Transaction<'_>) -> Result<i64, Error> {
    let row = tx.query_one("UPDATE meta SET value = value + 1 WHERE key = 'changes' RETURNING value", &[])?;
    get(&row, 0)
}

/// Tries to become (or confirms being) the leader: a session-level lock, released by PostgreSQL
/// when this session ends (the process died, the connection broke).
pub fn try_lead(client: &mut postgres::Client) -> Result<bool, Error> {
    let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?;
    get(&row, 0)
}

pub fn version(c: &mut impl GenericClient) -> Result<u64, Error> {
    let row = c.query_one("SELECT value FROM meta WHERE key = 'version'", &[])?;
    Ok(u(get(&row, 0)?))
}

/// The published document as stored: (version, JSON), if any was published.
pub fn publication(c: &mut impl GenericClient) -> Result<Option<(u64, String)>, Error> {
    match c.query_opt("SELECT version, document FROM publication WHERE id = 1", &[])? {
        Some(r) => Ok(Some((u(get(&r, 0)?), get(&r, 1)?))),
        None => Ok(None),
    }
}

/// Records a new published version with its document (in the write that made it).
pub fn publish(tx: &mut Transaction<'_>, version: u64, document: &str) -> Result<(), Error> {
    tx.execute("UPDATE meta SET value = $1 WHERE key = 'version'", &[&i(version)])?;
    tx.execute(
        "INSERT INTO publication (id, version, document) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, document = excluded.document",
        &[&i(version), &document],
    )?;
    Ok(())
}

pub fn load(c: &mut impl GenericClient) -> Result<State, Error> {
    let mut state = State::default();
    let rows = c.query(
        "SELECT name, first_seen_ms, successes, failures, evidence_ms, penalty, penalty_ms, quarantined,
                quarantine_reason, quarantine_by, quarantine_ms, quarantine_auto, auto_armed, released_ms,
                total_success, total_failures, total_slow, latency_count, latency_sum_ms, last_report_ms
         FROM servers",
        &[],
    )?;
    for r in &rows {
        let quarantined: bool = get(r, 7)?;
        let quarantine = if quarantined {
            Some(QuarantineInfo {
                reason: get::<Option<String>>(r, 8)?.unwrap_or_default(),
                by: get::<Option<String>>(r, 9)?.unwrap_or_default(),
                since_ms: u(get::<Option<i64>>(r, 10)?.unwrap_or(0)),
                automatic: get::<Option<bool>>(r, 11)?.unwrap_or(false),
            })
        } else {
            None
        };
        let srv = ServerState {
            first_seen_ms: u(get(r, 1)?),
            evidence: Evidence { successes: get(r, 2)?, failures: get(r, 3)?, updated_ms: u(get(r, 4)?) },
            security: SecurityState { penalty: get(r, 5)?, updated_ms: u(get(r, 6)?) },
            quarantine,
            auto_armed: get(r, 12)?,
            released_ms: get::<Option<i64>>(r, 13)?.map(u),
            totals: Totals {
                success: u(get(r, 14)?),
                failures: u(get(r, 15)?),
                slow: u(get(r, 16)?),
                latency_count: u(get(r, 17)?),
                latency_sum_ms: u(get(r, 18)?),
                last_report_ms: get::<Option<i64>>(r, 19)?.map(u),
            },
            last_sample: None,
        };
        state.servers.insert(get(r, 0)?, srv);
    }
    let rows = c.query("SELECT DISTINCT ON (server) server, at_ms, state FROM history ORDER BY server, id DESC", &[])?;
    for r in &rows {
        let name: String = get(r, 0)?;
        let st: String = get(r, 2)?;
        let sample = (u(get(r, 1)?), trust_state(&st)?);
        if let Some(srv) = state.servers.get_mut(&name) {
            srv.last_sample = Some(sample);
        }
    }
    let rows = c.query("SELECT rater, subject_kind, subject, value FROM ratings", &[])?;
    for r in &rows {
        let (rater, kind, subject, value): (String, String, String, f64) = (get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?);
        if kind == "rater" {
            state.vouches.insert((rater, subject), value);
        } else {
            state.ratings.entry(subject).or_default().insert(rater, value);
        }
    }
    let rows = c.query(
        "SELECT server, fingerprint, tool, old_fingerprint, why, reported_by, first_ms, last_ms, reports FROM held_changes",
        &[],
    )?;
    for r in &rows {
        let h = HeldChange {
            server: get(r, 0)?,
            fingerprint: get(r, 1)?,
            tool: get(r, 2)?,
            old_fingerprint: get(r, 3)?,
            why: get(r, 4)?,
            reported_by: get(r, 5)?,
            first_ms: u(get(r, 6)?),
            last_ms: u(get(r, 7)?),
            reports: u(get(r, 8)?),
        };
        state.held.insert((h.server.clone(), h.fingerprint.clone()), h);
    }
    let rows = c.query("SELECT server, fingerprint, tool, approved_by, at_ms, reason FROM tool_approvals", &[])?;
    for r in &rows {
        let a = ToolApprovalRecord {
            server: get(r, 0)?,
            fingerprint: get(r, 1)?,
            tool: get(r, 2)?,
            approved_by: get(r, 3)?,
            at_ms: u(get(r, 4)?),
            reason: get(r, 5)?,
        };
        state.approvals.insert((a.server.clone(), a.fingerprint.clone()), a);
    }
    let rows = c.query("SELECT fingerprint, server, tool, severity, rules, scanned_ms FROM definition_scans", &[])?;
    for r in &rows {
        let sev: Option<String> = get(r, 3)?;
        let rules: String = get(r, 4)?;
        let d = DefinitionScan {
            fingerprint: get(r, 0)?,
            server: get(r, 1)?,
            tool: get(r, 2)?,
            severity: sev.as_deref().map(severity).transpose()?,
            rules: rules.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect(),
            scanned_ms: u(get(r, 5)?),
        };
        state.scans.insert(d.fingerprint.clone(), d);
    }
    for r in &c.query("SELECT server, first_ms, voices, held FROM provisional_servers", &[])? {
        let (voices, held): (String, String) = (get(r, 2)?, get(r, 3)?);
        let p = store::provisional(u(get(r, 1)?), &voices, &held).map_err(|e| bad("provisional server", &e))?;
        state.provisional.insert(get(r, 0)?, p);
    }
    Ok(state)
}

pub fn upsert_provisional(tx: &mut Transaction<'_>, server: &str, p: &Provisional) -> Result<(), Error> {
    let (voices, held) = store::provisional_columns(p);
    tx.execute(
        "INSERT INTO provisional_servers (server, first_ms, voices, held) VALUES ($1, $2, $3, $4)
         ON CONFLICT (server) DO UPDATE SET voices = excluded.voices, held = excluded.held",
        &[&server, &i(p.first_ms), &voices, &held],
    )?;
    Ok(())
}

pub fn delete_provisional(tx: &mut Transaction<'_>, server: &str) -> Result<(), Error> {
    tx.execute("DELETE FROM provisional_servers WHERE server = $1", &[&server])?;
    Ok(())
}

pub fn insert_scan(tx: &mut Transaction<'_>, d: &DefinitionScan) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO definition_scans (fingerprint, server, tool, severity, rules, scanned_ms) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (fingerprint) DO NOTHING",
        &[&d.fingerprint, &d.server, &d.tool, &d.severity.map(Severity::as_str), &d.rules.join(","), &i(d.scanned_ms)],
    )?;
    Ok(())
}

pub fn delete_scan(tx: &mut Transaction<'_>, fingerprint: &str) -> Result<(), Error> {
    tx.execute("DELETE FROM definition_scans WHERE fingerprint = $1", &[&fingerprint])?;
    Ok(())
}

/// Writes a held change as it now stands.
pub fn upsert_held(tx: &mut Transaction<'_>, h: &HeldChange) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO held_changes (server, fingerprint, tool, old_fingerprint, why, reported_by, first_ms, last_ms, reports)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (server, fingerprint) DO UPDATE SET tool = excluded.tool, old_fingerprint = excluded.old_fingerprint,
            why = excluded.why, reported_by = excluded.reported_by, last_ms = excluded.last_ms, reports = excluded.reports",
        &[
            &h.server,
            &h.fingerprint,
            &h.tool,
            &h.old_fingerprint,
            &h.why.as_deref().map(|v| truncate(v, MAX_EVIDENCE)),
            &h.reported_by,
            &i(h.first_ms),
            &i(h.last_ms),
            &i(h.reports),
        ],
    )?;
    Ok(())
}

pub fn delete_held(tx: &mut Transaction<'_>, server: &str, fingerprint: &str) -> Result<(), Error> {
    tx.execute("DELETE FROM held_changes WHERE server = $1 AND fingerprint = $2", &[&server, &fingerprint])?;
    Ok(())
}

pub fn insert_approval(tx: &mut Transaction<'_>, a: &ToolApprovalRecord) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO tool_approvals (server, fingerprint, tool, approved_by, at_ms, reason) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&a.server, &a.fingerprint, &a.tool, &a.approved_by, &i(a.at_ms), &a.reason],
    )?;
    Ok(())
}

pub fn delete_approval(tx: &mut Transaction<'_>, server: &str, fingerprint: &str) -> Result<(), Error> {
    tx.execute("DELETE FROM tool_approvals WHERE server = $1 AND fingerprint = $2", &[&server, &fingerprint])?;
    Ok(())
}

pub fn upsert_server(tx: &mut Transaction<'_>, name: &str, s: &ServerState) -> Result<(), Error> {
    let q = s.quarantine.as_ref();
    tx.execute(
        "INSERT INTO servers (name, first_seen_ms, successes, failures, evidence_ms, penalty, penalty_ms, quarantined,
                quarantine_reason, quarantine_by, quarantine_ms, quarantine_auto, auto_armed, released_ms,
                total_success, total_failures, total_slow, latency_count, latency_sum_ms, last_report_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
         ON CONFLICT (name) DO UPDATE SET
            successes = excluded.successes, failures = excluded.failures, evidence_ms = excluded.evidence_ms,
            penalty = excluded.penalty, penalty_ms = excluded.penalty_ms, quarantined = excluded.quarantined,
            quarantine_reason = excluded.quarantine_reason, quarantine_by = excluded.quarantine_by,
            quarantine_ms = excluded.quarantine_ms, quarantine_auto = excluded.quarantine_auto,
            auto_armed = excluded.auto_armed, released_ms = excluded.released_ms,
            total_success = excluded.total_success, total_failures = excluded.total_failures,
            total_slow = excluded.total_slow, latency_count = excluded.latency_count,
            latency_sum_ms = excluded.latency_sum_ms, last_report_ms = excluded.last_report_ms",
        &[
            &name,
            &i(s.first_seen_ms),
            &s.evidence.successes,
            &s.evidence.failures,
            &i(s.evidence.updated_ms),
            &s.security.penalty,
            &i(s.security.updated_ms),
            &q.is_some(),
            &q.map(|q| q.reason.as_str()),
            &q.map(|q| q.by.as_str()),
            &q.map(|q| i(q.since_ms)),
            &q.map(|q| q.automatic),
            &s.auto_armed,
            &s.released_ms.map(i),
            &i(s.totals.success),
            &i(s.totals.failures),
            &i(s.totals.slow),
            &i(s.totals.latency_count),
            &i(s.totals.latency_sum_ms),
            &s.totals.last_report_ms.map(i),
        ],
    )?;
    Ok(())
}

pub fn batch_seen(c: &mut impl GenericClient, token_name: &str, batch_id: &str) -> Result<bool, Error> {
    Ok(c.query_opt("SELECT 1 FROM batches WHERE token_name = $1 AND batch_id = $2", &[&token_name, &batch_id])?.is_some())
}

pub fn insert_batch(tx: &mut Transaction<'_>, token_name: &str, batch_id: &str, sidecar: &str, now: u64) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO batches (token_name, batch_id, sidecar, received_ms) VALUES ($1, $2, $3, $4)",
        &[&token_name, &batch_id, &sidecar, &i(now)],
    )?;
    Ok(())
}

/// As [`crate::store::record_security_event`].
pub fn record_security_event(
    tx: &mut Transaction<'_>,
    server: &str,
    reported_by: &str,
    batch_id: &str,
    e: &SecurityEvent,
    now: u64,
    dedup_since: Option<u64>,
) -> Result<(i64, bool), Error> {
    if let Some(since) = dedup_since {
        let existing = tx.query_opt(
            "SELECT id FROM security_events WHERE server = $1 AND rule = $2 AND severity = $3
               AND tool IS NOT DISTINCT FROM $4 AND new_fingerprint IS NOT DISTINCT FROM $5 AND first_ms >= $6
             ORDER BY id DESC LIMIT 1",
            &[&server, &e.rule, &e.severity.as_str(), &e.tool, &e.new_fingerprint, &i(since)],
        )?;
        if let Some(r) = existing {
            let id: i64 = get(&r, 0)?;
            tx.execute("UPDATE security_events SET reports = reports + 1, last_ms = $2 WHERE id = $1", &[&id, &i(now)])?;
            return Ok((id, false));
        }
    }
    let row = tx.query_one(
        "INSERT INTO security_events (server, first_ms, last_ms, reports, reported_by, batch_id, rule, severity, tool,
                evidence, old_fingerprint, new_fingerprint)
         VALUES ($1, $2, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        &[
            &server,
            &i(now),
            &reported_by,
            &batch_id,
            &e.rule,
            &e.severity.as_str(),
            &e.tool,
            &e.evidence.as_deref().map(|v| truncate(v, MAX_EVIDENCE)),
            &e.old_fingerprint,
            &e.new_fingerprint,
        ],
    )?;
    Ok((get(&row, 0)?, true))
}

/// As [`crate::store::record_flag`].
pub fn record_flag(
    tx: &mut Transaction<'_>,
    flagged_by: &str,
    f: &FlagRequest,
    description: Option<&str>,
    now: u64,
    dedup_since: Option<u64>,
) -> Result<(i64, bool), Error> {
    if let Some(since) = dedup_since {
        let existing = tx.query_opt(
            "SELECT id FROM flags WHERE server = $1 AND rule = $2 AND severity = $3 AND tool IS NOT DISTINCT FROM $4
               AND first_ms >= $5 ORDER BY id DESC LIMIT 1",
            &[&f.server, &f.rule, &f.severity.as_str(), &f.tool, &i(since)],
        )?;
        if let Some(r) = existing {
            let id: i64 = get(&r, 0)?;
            tx.execute("UPDATE flags SET reports = reports + 1, last_ms = $2 WHERE id = $1", &[&id, &i(now)])?;
            return Ok((id, false));
        }
    }
    let row = tx.query_one(
        "INSERT INTO flags (server, first_ms, last_ms, reports, flagged_by, severity, rule, tool, description)
         VALUES ($1, $2, $2, 1, $3, $4, $5, $6, $7) RETURNING id",
        &[&f.server, &i(now), &flagged_by, &f.severity.as_str(), &f.rule, &f.tool, &description],
    )?;
    let id: i64 = get(&row, 0)?;
    tx.execute(
        "DELETE FROM flags WHERE server = $1
           AND id < (SELECT id FROM flags WHERE server = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&f.server, &(crate::store::FLAGS_KEPT - 1)],
    )?;
    Ok((id, true))
}

pub fn trim_security_events(tx: &mut Transaction<'_>, server: &str) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM security_events WHERE server = $1
           AND id < (SELECT id FROM security_events WHERE server = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&server, &(crate::store::EVENTS_KEPT - 1)],
    )?;
    Ok(())
}

pub fn upsert_rating(
    tx: &mut Transaction<'_>,
    rater: &str,
    subject: &Subject,
    value: f64,
    comment: Option<&str>,
    now: u64,
) -> Result<(), Error> {
    let (kind, name) = match subject {
        Subject::Server(n) => ("server", n),
        Subject::Rater(n) => ("rater", n),
    };
    tx.execute(
        "INSERT INTO ratings (rater, subject_kind, subject, value, comment, at_ms) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (rater, subject_kind, subject) DO UPDATE SET
            value = excluded.value, comment = excluded.comment, at_ms = excluded.at_ms",
        &[&rater, &kind, &name, &value, &comment, &i(now)],
    )?;
    Ok(())
}

/// Removes a rating (a withdrawn vouch leaves nothing behind).
pub fn delete_rating(tx: &mut Transaction<'_>, rater: &str, subject: &Subject) -> Result<(), Error> {
    let (kind, name) = match subject {
        Subject::Server(n) => ("server", n),
        Subject::Rater(n) => ("rater", n),
    };
    tx.execute("DELETE FROM ratings WHERE rater = $1 AND subject_kind = $2 AND subject = $3", &[&rater, &kind, &name])?;
    Ok(())
}

/// Appends to the audit chain. Called under the write lock: the id and the previous hash read
/// here are still the newest when the transaction commits, so concurrent replicas extend one
/// chain.
pub fn insert_audit(
    tx: &mut Transaction<'_>,
    now: u64,
    actor: &str,
    action: AuditAction,
    server: &str,
    reason: &str,
    score: f64,
) -> Result<i64, Error> {
    let row = tx.query_one(
        "UPDATE meta SET value = GREATEST(value, (SELECT COALESCE(MAX(id), 0) FROM audit)) + 1
         WHERE key = 'audit_issued' RETURNING value",
        &[],
    )?;
    let id: i64 = get(&row, 0)?;
    let prev = tx
        .query_opt("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", &[])?
        .map(|r| get::<String>(&r, 0))
        .transpose()?
        .and_then(|h| audit::from_hex(&h))
        .unwrap_or(audit::GENESIS);
    let f = audit::Fields { id, at_ms: i(now), actor, action: action.as_str(), server, reason, score };
    let hash = audit::to_hex(&audit::link(&prev, &f));
    tx.execute(
        "INSERT INTO audit (id, at_ms, actor, action, server, reason, score, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&id, &i(now), &actor, &action.as_str(), &server, &reason, &score, &hash],
    )?;
    Ok(id)
}

pub fn audit(c: &mut impl GenericClient, server: Option<&str>, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, Error> {
    let rows = c.query(
        "SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit
         WHERE ($1::TEXT IS NULL OR server = $1) AND ($2::BIGINT IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        &[&server, &before_id, &i64::from(limit)],
    )?;
    rows.iter()
        .map(|r| {
            let action: String = get(r, 3)?;
            Ok(AuditEntry {
                id: get(r, 0)?,
                at_ms: u(get(r, 1)?),
                actor: get(r, 2)?,
                action: AuditAction::parse(&action).ok_or_else(|| bad("audit action", &action))?,
                server: get(r, 4)?,
                reason: get(r, 5)?,
                score: get(r, 6)?,
                hash: get(r, 7)?,
            })
        })
        .collect()
}

/// Walks the whole chain in id order in one snapshot (pages of 1,000 entries).
pub fn verify_audit(c: &mut impl GenericClient) -> Result<AuditVerification, Error> {
    let mut v = audit::Verifier::new();
    let mut after = 0i64;
    loop {
        let rows = c.query(
            "SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit WHERE id > $1 ORDER BY id LIMIT 1000",
            &[&after],
        )?;
        for r in &rows {
            let (id, at_ms): (i64, i64) = (get(r, 0)?, get(r, 1)?);
            let (actor, action, server, reason): (String, String, String, String) = (get(r, 2)?, get(r, 3)?, get(r, 4)?, get(r, 5)?);
            let f = audit::Fields { id, at_ms, actor: &actor, action: &action, server: &server, reason: &reason, score: get(r, 6)? };
            let hash: String = get(r, 7)?;
            if let Some(done) = v.push(&f, &hash) {
                return Ok(done);
            }
            after = id;
        }
        if rows.len() < 1000 {
            break;
        }
    }
    let row = c.query_one("SELECT value FROM meta WHERE key = 'audit_issued'", &[])?;
    Ok(v.finish(Some(get(&row, 0)?)))
}

/// Up to `limit` entries after id `after`, in id order; with the highest id ever issued when this
/// is the last page.
pub fn audit_page(c: &mut impl GenericClient, after: i64, limit: u32) -> Result<(Vec<audit::Row>, Option<Option<i64>>), Error> {
    let rows = c.query(
        "SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
        &[&after, &i64::from(limit)],
    )?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(audit::Row {
                id: get(r, 0)?,
                at_ms: get(r, 1)?,
                actor: get(r, 2)?,
                action: get(r, 3)?,
                server: get(r, 4)?,
                reason: get(r, 5)?,
                score: get(r, 6)?,
                hash: get(r, 7)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let last = if rows.len() < limit as usize {
        let row = c.query_one("SELECT value FROM meta WHERE key = 'audit_issued'", &[])?;
        Some(Some(get(&row, 0)?))
    } else {
        None
    };
    Ok((rows, last))
}

pub fn insert_sample(tx: &mut Transaction<'_>, server: &str, now: u64, score: f64, state: TrustState) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO history (server, at_ms, score, state) VALUES ($1, $2, $3, $4)",
        &[&server, &i(now), &score, &state_str(state)],
    )?;
    Ok(())
}

pub fn history(c: &mut impl GenericClient, server: &str, since: u64) -> Result<Vec<HistorySample>, Error> {
    let rows = c.query(
        "SELECT at_ms, score, state FROM history WHERE server = $1 AND at_ms >= $2 ORDER BY at_ms, id",
        &[&server, &i(since)],
    )?;
    rows.iter()
        .map(|r| {
            let st: String = get(r, 2)?;
            Ok(HistorySample { at_ms: u(get(r, 0)?), score: get(r, 1)?, state: trust_state(&st)? })
        })
        .collect()
}

pub fn security_events(c: &mut impl GenericClient, server: &str, limit: u32) -> Result<Vec<SecurityEventRecord>, Error> {
    let rows = c.query(
        "SELECT id, first_ms, last_ms, reports, reported_by, rule, severity, tool, evidence, old_fingerprint, new_fingerprint
         FROM security_events WHERE server = $1 ORDER BY id DESC LIMIT $2",
        &[&server, &i64::from(limit)],
    )?;
    rows.iter()
        .map(|r| {
            let sev: String = get(r, 6)?;
            Ok(SecurityEventRecord {
                id: get(r, 0)?,
                first_ms: u(get(r, 1)?),
                last_ms: u(get(r, 2)?),
                reports: u(get(r, 3)?),
                reported_by: get(r, 4)?,
                rule: get(r, 5)?,
                severity: severity(&sev)?,
                tool: get(r, 7)?,
                evidence: get(r, 8)?,
                old_fingerprint: get(r, 9)?,
                new_fingerprint: get(r, 10)?,
            })
        })
        .collect()
}

pub fn flags(c: &mut impl GenericClient, server: &str, limit: u32) -> Result<Vec<FlagRecord>, Error> {
    let rows = c.query(
        "SELECT id, first_ms, last_ms, reports, flagged_by, rule, severity, tool, description
         FROM flags WHERE server = $1 ORDER BY id DESC LIMIT $2",
        &[&server, &i64::from(limit)],
    )?;
    rows.iter()
        .map(|r| {
            let sev: String = get(r, 6)?;
            Ok(FlagRecord {
                id: get(r, 0)?,
                first_ms: u(get(r, 1)?),
                last_ms: u(get(r, 2)?),
                reports: u(get(r, 3)?),
                flagged_by: get(r, 4)?,
                rule: get(r, 5)?,
                severity: severity(&sev)?,
                tool: get(r, 7)?,
                description: get(r, 8)?,
            })
        })
        .collect()
}

pub fn server_ratings(c: &mut impl GenericClient, server: &str) -> Result<Vec<RaterRating>, Error> {
    let rows = c.query(
        "SELECT rater, value, at_ms, comment FROM ratings WHERE subject_kind = 'server' AND subject = $1",
        &[&server],
    )?;
    rows.iter()
        .map(|r| Ok(RaterRating { rater: get(r, 0)?, value: get(r, 1)?, standing: 0.0, at_ms: u(get(r, 2)?), comment: get(r, 3)? }))
        .collect()
}

pub fn prune(
    tx: &mut Transaction<'_>,
    history_before: u64,
    batches_before: u64,
    budget_before: u64,
    seen_before: u64,
) -> Result<(usize, usize), Error> {
    let h = tx.execute("DELETE FROM history WHERE at_ms < $1", &[&i(history_before)])?;
    let b = tx.execute("DELETE FROM batches WHERE received_ms < $1", &[&i(batches_before)])?;
    tx.execute("DELETE FROM policy_budget WHERE at_ms < $1", &[&i(budget_before)])?;
    tx.execute("DELETE FROM policy_seen WHERE at_ms < $1", &[&i(seen_before)])?;
    Ok((usize::try_from(h).unwrap_or(usize::MAX), usize::try_from(b).unwrap_or(usize::MAX)))
}

/// The ingestion policy's durable memory.
pub fn load_policy(c: &mut impl GenericClient) -> Result<policy::Memory, Error> {
    let mut m = policy::Memory::default();
    for r in c.query("SELECT server, phase, kinds, at_ms FROM policy_kinds", &[])? {
        let phase: String = get(&r, 1)?;
        let kinds: String = get(&r, 2)?;
        m.kinds.push(KindsEntry {
            server: get(&r, 0)?,
            phase: Phase::parse(&phase).ok_or_else(|| bad("policy phase", &phase))?,
            kinds: kinds.split(',').filter(|k| !k.is_empty()).map(str::to_string).collect(),
            at_ms: u(get(&r, 3)?),
        });
    }
    for r in c.query("SELECT credential, spent_on, server, at_ms FROM policy_budget ORDER BY id", &[])? {
        let on: String = get(&r, 1)?;
        m.budget.push(BudgetEntry {
            credential: get(&r, 0)?,
            on: Spent::parse(&on).ok_or_else(|| bad("budget kind", &on))?,
            server: get(&r, 2)?,
            at_ms: u(get(&r, 3)?),
        });
    }
    for r in c.query("SELECT server, tool, kind, severity, at_ms FROM policy_seen", &[])? {
        let sev: String = get(&r, 3)?;
        m.seen.push(SeenEntry {
            server: get(&r, 0)?,
            tool: get(&r, 1)?,
            kind: get(&r, 2)?,
            severity: severity(&sev)?,
            at_ms: u(get(&r, 4)?),
        });
    }
    Ok(m)
}

/// Stores one change of the policy's durable memory.
pub fn policy_change(tx: &mut Transaction<'_>, c: &Change) -> Result<(), Error> {
    match c {
        Change::Kinds(k) => {
            tx.execute(
                "INSERT INTO policy_kinds (server, phase, kinds, at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (server, phase) DO UPDATE SET kinds = excluded.kinds, at_ms = excluded.at_ms",
                &[&k.server, &k.phase.as_str(), &k.kinds.join(","), &i(k.at_ms)],
            )?;
        }
        Change::ClearKinds { server, phase } => {
            tx.execute("DELETE FROM policy_kinds WHERE server = $1 AND phase = $2", &[server, &phase.as_str()])?;
        }
        Change::Budget(b) => {
            tx.execute(
                "INSERT INTO policy_budget (credential, spent_on, server, at_ms) VALUES ($1, $2, $3, $4)",
                &[&b.credential, &b.on.as_str(), &b.server, &i(b.at_ms)],
            )?;
        }
        Change::Seen(e) | Change::Unseen(e) => {
            tx.execute(
                "DELETE FROM policy_seen WHERE server = $1 AND tool IS NOT DISTINCT FROM $2 AND kind = $3 AND severity = $4",
                &[&e.server, &e.tool, &e.kind, &e.severity.as_str()],
            )?;
            if matches!(c, Change::Seen(_)) {
                tx.execute(
                    "INSERT INTO policy_seen (server, tool, kind, severity, at_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&e.server, &e.tool, &e.kind, &e.severity.as_str(), &i(e.at_ms)],
                )?;
            }
        }
    }
    Ok(())
}

/// Removes everything stored about `servers` but their audit entries (the log is append-only),
/// one statement per table for all of them.
pub fn forget_servers(tx: &mut Transaction<'_>, servers: &[String]) -> Result<(), Error> {
    for sql in [
        "DELETE FROM servers WHERE name = ANY($1)",
        "DELETE FROM ratings WHERE subject_kind = 'server' AND subject = ANY($1)",
        "DELETE FROM security_events WHERE server = ANY($1)",
        "DELETE FROM flags WHERE server = ANY($1)",
        "DELETE FROM history WHERE server = ANY($1)",
        "DELETE FROM policy_kinds WHERE server = ANY($1)",
        "DELETE FROM policy_seen WHERE server = ANY($1)",
        "DELETE FROM held_changes WHERE server = ANY($1)",
    ] {
        tx.execute(sql, &[&servers])?;
    }
    Ok(())
}
