//! SQLite persistence: schema, pragmas, and one function per read or write. Callers pass a
//! transaction (or the connection for reads); nothing here commits.
//!
//! WAL with `synchronous=FULL`: a commit is on disk (the WAL fsynced) before it returns, so a
//! write acknowledged after its commit survives SIGKILL and power loss. `locking_mode=EXCLUSIVE`
//! keeps a second aggregator process off the same file.
//!
//! Schema versions: 1, then 2 (the audit log's hash chain: [`crate::audit`]). Opening a version 1
//! database migrates it in one transaction, computing the chain over its existing entries. The
//! tables of held tool changes, approvals and definition scans were added to version 2 as
//! `CREATE TABLE IF NOT EXISTS` (additive: an older aggregator opening the file ignores them).

use crate::admission::Provisional;
use crate::audit;
use crate::policy::{self, BudgetEntry, Change, KindsEntry, Phase, SeenEntry, Spent};
use crate::state::{ServerState, State, Totals};
use crate::validate::{truncate, MAX_EVIDENCE};
use crate::views::{
    AuditAction, AuditEntry, DefinitionScan, FlagRecord, HeldChange, HistorySample, QuarantineInfo, RaterRating,
    SecurityEventRecord, ToolApprovalRecord,
};
use mcp_warden_core::trust::wire::{FlagRequest, SecurityEvent, Severity, Subject, TrustState};
use mcp_warden_core::trust::{Evidence, SecurityState};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::time::Duration;
use tracing::info;

pub use rusqlite::Error;

pub const SCHEMA_VERSION: i64 = 2;
/// Security event records kept per server (newest), flags per server.
pub const EVENTS_KEPT: i64 = 200;
pub const FLAGS_KEPT: i64 = 1000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS servers (
    name                TEXT PRIMARY KEY,
    first_seen_ms       INTEGER NOT NULL,
    successes           REAL NOT NULL,
    failures            REAL NOT NULL,
    evidence_ms         INTEGER NOT NULL,
    penalty             REAL NOT NULL,
    penalty_ms          INTEGER NOT NULL,
    quarantined         INTEGER NOT NULL,
    quarantine_reason   TEXT,
    quarantine_by       TEXT,
    quarantine_ms       INTEGER,
    quarantine_auto     INTEGER,
    auto_armed          INTEGER NOT NULL,
    released_ms         INTEGER,
    total_success       INTEGER NOT NULL,
    total_failures      INTEGER NOT NULL,
    total_slow          INTEGER NOT NULL,
    latency_count       INTEGER NOT NULL,
    latency_sum_ms      INTEGER NOT NULL,
    last_report_ms      INTEGER
) WITHOUT ROWID;

-- Idempotency of signal batches: (token name, batch id), kept batch_retention_ms.
CREATE TABLE IF NOT EXISTS batches (
    token_name  TEXT NOT NULL,
    batch_id    TEXT NOT NULL,
    sidecar     TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (token_name, batch_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_received ON batches (received_ms);

-- Latest rating per (rater, subject). subject_kind 'server' or 'rater' (a vouch).
CREATE TABLE IF NOT EXISTS ratings (
    rater        TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('server', 'rater')),
    subject      TEXT NOT NULL,
    value        REAL NOT NULL,
    comment      TEXT,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (rater, subject_kind, subject)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ratings_subject ON ratings (subject_kind, subject);

-- Security events from sidecars; repeats of one finding fold into one row (reports, last_ms).
CREATE TABLE IF NOT EXISTS security_events (
    id              INTEGER PRIMARY KEY,
    server          TEXT NOT NULL,
    first_ms        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL,
    reports         INTEGER NOT NULL,
    reported_by     TEXT NOT NULL,
    batch_id        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    tool            TEXT,
    evidence        TEXT,
    old_fingerprint TEXT,
    new_fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS security_events_server ON security_events (server, id);

CREATE TABLE IF NOT EXISTS flags (
    id          INTEGER PRIMARY KEY,
    server      TEXT NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL,
    reports     INTEGER NOT NULL,
    flagged_by  TEXT NOT NULL,
    severity    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    tool        TEXT,
    description TEXT
);
CREATE INDEX IF NOT EXISTS flags_server ON flags (server, id);

CREATE TABLE IF NOT EXISTS history (
    server TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    score  REAL NOT NULL,
    state  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_server ON history (server, at_ms);
CREATE INDEX IF NOT EXISTS history_at ON history (at_ms);

-- Every quarantine decision. Append-only: the triggers refuse changes; each entry's hash chains
-- it to the previous one (audit.rs).
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    server TEXT NOT NULL,
    reason TEXT NOT NULL,
    score  REAL NOT NULL,
    hash   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_server ON audit (server, id);

-- Tool changes sidecars hold until cleared (pin/tool-held), one row per (server, fingerprint);
-- bounded per server and in all by the engine. Additive: older aggregators ignore both tables.
CREATE TABLE IF NOT EXISTS held_changes (
    server          TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    tool            TEXT,
    old_fingerprint TEXT,
    why             TEXT,
    reported_by     TEXT NOT NULL,
    first_ms        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL,
    reports         INTEGER NOT NULL,
    PRIMARY KEY (server, fingerprint)
) WITHOUT ROWID;

-- Operators' approvals of tool definitions, published to sidecars (each one also in the audit log).
CREATE TABLE IF NOT EXISTS tool_approvals (
    server      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    tool        TEXT,
    approved_by TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (server, fingerprint)
) WITHOUT ROWID;

-- The mesh-wide scan: one row per definition fingerprint ever scanned (bounded by the engine);
-- severity NULL when it scanned clean enough, else the verdict sidecars get.
CREATE TABLE IF NOT EXISTS definition_scans (
    fingerprint TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    tool        TEXT,
    severity    TEXT,
    rules       TEXT NOT NULL,
    scanned_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS definition_scans_at ON definition_scans (scanned_ms);
-- The ingestion policy's durable memory (policy.rs). Created on open, so schema 2 databases
-- get them without a migration. Per server and phase ('quarantined': the kinds of finding
-- behind its current quarantine; 'released': the kinds its last release covers), kinds
-- comma-separated.
CREATE TABLE IF NOT EXISTS policy_kinds (
    server TEXT NOT NULL,
    phase  TEXT NOT NULL CHECK (phase IN ('quarantined', 'released')),
    kinds  TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    PRIMARY KEY (server, phase)
) WITHOUT ROWID;
-- Each sidecar credential's spent budgets ('penalty', 'new_server'), kept one budget window.
CREATE TABLE IF NOT EXISTS policy_budget (
    credential TEXT NOT NULL,
    spent_on   TEXT NOT NULL CHECK (spent_on IN ('penalty', 'new_server')),
    server     TEXT NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_budget_at ON policy_budget (at_ms);
-- Findings that counted, per (server, tool, kind, severity), kept one de-duplication window.
CREATE TABLE IF NOT EXISTS policy_seen (
    server   TEXT NOT NULL,
    tool     TEXT,
    kind     TEXT NOT NULL,
    severity TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_seen_server ON policy_seen (server);
CREATE INDEX IF NOT EXISTS policy_seen_at ON policy_seen (at_ms);
-- Servers named by fewer sidecar credentials than the admission quorum (admission.rs): the
-- credentials that named each (JSON object credential -> ms) and what their reports said
-- meanwhile (JSON), counted on admission. Created on open, like the policy's tables.
CREATE TABLE IF NOT EXISTS provisional_servers (
    server   TEXT PRIMARY KEY,
    first_ms INTEGER NOT NULL,
    voices   TEXT NOT NULL,
    held     TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// Created after the audit table is in its current shape (a migration drops them meanwhile).
const AUDIT_TRIGGERS: &str = r#"
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Schema 1 to 2: the audit table gets its `hash` column, computed over the existing entries in
/// id order (the update trigger is lifted for that, inside the same transaction).
fn migrate_1_to_2(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
         DROP TRIGGER IF EXISTS audit_no_update;",
    )?;
    let rows: Vec<(i64, i64, String, String, String, String, f64)> = tx
        .prepare("SELECT id, at_ms, actor, action, server, reason, score FROM audit ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut prev = audit::GENESIS;
    for (id, at_ms, actor, action, server, reason, score) in &rows {
        let f = audit::Fields { id: *id, at_ms: *at_ms, actor, action, server, reason, score: *score };
        prev = audit::link(&prev, &f);
        tx.execute("UPDATE audit SET hash = ?1 WHERE id = ?2", params![audit::to_hex(&prev), id])?;
    }
    tx.execute_batch(AUDIT_TRIGGERS)?;
    tx.execute("UPDATE meta SET value = 2 WHERE key = 'schema'", [])?;
    tx.commit()?;
    info!(entries = rows.len(), "database migrated from schema 1 to 2: hash chain computed over the existing audit entries");
    Ok(())
}

/// An error that says the file is damaged or not a database (as opposed to locked, missing, ...).
pub fn is_corruption(e: &Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn corrupt(message: String) -> Error {
    Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), Some(message))
}

/// SQLite's own consistency check of every page and index (`PRAGMA quick_check`).
pub fn quick_check(conn: &Connection) -> rusqlite::Result<()> {
    let problems: Vec<String> =
        conn.prepare("PRAGMA quick_check(5)")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if problems.len() == 1 && problems.first().is_some_and(|p| p == "ok") {
        Ok(())
    } else {
        Err(corrupt(format!("integrity check failed: {}", problems.join("; "))))
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn bad(col: usize, what: &str, got: &str) -> Error {
    Error::FromSqlConversionFailure(col, Type::Text, format!("unknown {what} {got:?} in the database").into())
}

fn severity(row: &Row<'_>, col: usize) -> rusqlite::Result<Severity> {
    let s: String = row.get(col)?;
    match s.as_str() {
        "low" => Ok(Severity::Low),
        "medium" => Ok(Severity::Medium),
        "high" => Ok(Severity::High),
        "critical" => Ok(Severity::Critical),
        other => Err(bad(col, "severity", other)),
    }
}

pub fn state_str(s: TrustState) -> &'static str {
    match s {
        TrustState::Trusted => "trusted",
        TrustState::Degraded => "degraded",
        TrustState::Quarantined => "quarantined",
    }
}

fn trust_state(row: &Row<'_>, col: usize) -> rusqlite::Result<TrustState> {
    let s: String = row.get(col)?;
    match s.as_str() {
        "trusted" => Ok(TrustState::Trusted),
        "degraded" => Ok(TrustState::Degraded),
        "quarantined" => Ok(TrustState::Quarantined),
        other => Err(bad(col, "state", other)),
    }
}

/// Opens (creating if needed) the database with the durability settings, checks it, and brings
/// its schema up to date. A damaged file is an error ([`is_corruption`]), never replaced.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    // Before WAL: the WAL index then lives in this process's memory, and the first write
    // takes a lock held until the connection closes (a second aggregator gets "locked").
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::InvalidParameterName(format!("could not enable WAL (journal_mode is {mode})")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    quick_check(&conn)?;
    conn.execute_batch(SCHEMA)?;
    let schema: Option<i64> = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).optional()?;
    match schema {
        None => {
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])?;
        }
        Some(1) => migrate_1_to_2(&mut conn)?,
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(Error::InvalidParameterName(format!(
                "database schema version {v} is not supported by this aggregator (it knows {SCHEMA_VERSION})"
            )))
        }
    }
    conn.execute_batch(AUDIT_TRIGGERS)?;
    Ok(conn)
}

pub fn version(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| r.get(0)).optional()?;
    Ok(u(v.unwrap_or(0)))
}

pub fn set_version(conn: &Connection, v: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [i(v)],
    )?;
    Ok(())
}

/// Everything the in-memory state is rebuilt from (standing is left to the caller).
pub fn load(conn: &Connection) -> rusqlite::Result<State> {
    let mut state = State::default();
    let mut stmt = conn.prepare(
        "SELECT name, first_seen_ms, successes, failures, evidence_ms, penalty, penalty_ms, quarantined,
                quarantine_reason, quarantine_by, quarantine_ms, quarantine_auto, auto_armed, released_ms,
                total_success, total_failures, total_slow, latency_count, latency_sum_ms, last_report_ms
         FROM servers",
    )?;
    let rows = stmt.query_map([], |r| {
        let quarantined: bool = r.get(7)?;
        let quarantine = if quarantined {
            Some(QuarantineInfo {
                reason: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                by: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                since_ms: u(r.get::<_, Option<i64>>(10)?.unwrap_or(0)),
                automatic: r.get::<_, Option<bool>>(11)?.unwrap_or(false),
            })
        } else {
            None
        };
        let srv = ServerState {
            first_seen_ms: u(r.get(1)?),
            evidence: Evidence { successes: r.get(2)?, failures: r.get(3)?, updated_ms: u(r.get(4)?) },
            security: SecurityState { penalty: r.get(5)?, updated_ms: u(r.get(6)?) },
            quarantine,
            auto_armed: r.get(12)?,
            released_ms: r.get::<_, Option<i64>>(13)?.map(u),
            totals: Totals {
                success: u(r.get(14)?),
                failures: u(r.get(15)?),
                slow: u(r.get(16)?),
                latency_count: u(r.get(17)?),
                latency_sum_ms: u(r.get(18)?),
                last_report_ms: r.get::<_, Option<i64>>(19)?.map(u),
            },
            last_sample: None,
        };
        Ok((r.get::<_, String>(0)?, srv))
    })?;
    for row in rows {
        let (name, srv) = row?;
        state.servers.insert(name, srv);
    }
    let mut stmt = conn.prepare(
        "SELECT server, at_ms, state FROM history WHERE rowid IN (SELECT MAX(rowid) FROM history GROUP BY server)",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, u(r.get(1)?), trust_state(r, 2)?)))?;
    for row in rows {
        let (name, at, st) = row?;
        if let Some(srv) = state.servers.get_mut(&name) {
            srv.last_sample = Some((at, st));
        }
    }
    let mut stmt = conn.prepare("SELECT rater, subject_kind, subject, value FROM ratings")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, f64>(3)?))
    })?;
    for row in rows {
        let (rater, kind, subject, value) = row?;
        if kind == "rater" {
            state.vouches.insert((rater, subject), value);
        } else {
            state.ratings.entry(subject).or_default().insert(rater, value);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT server, fingerprint, tool, old_fingerprint, why, reported_by, first_ms, last_ms, reports FROM held_changes",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(HeldChange {
            server: r.get(0)?,
            fingerprint: r.get(1)?,
            tool: r.get(2)?,
            old_fingerprint: r.get(3)?,
            why: r.get(4)?,
            reported_by: r.get(5)?,
            first_ms: u(r.get(6)?),
            last_ms: u(r.get(7)?),
            reports: u(r.get(8)?),
        })
    })?;
    for row in rows {
        let h = row?;
        state.held.insert((h.server.clone(), h.fingerprint.clone()), h);
    }
    let mut stmt = conn.prepare("SELECT server, fingerprint, tool, approved_by, at_ms, reason FROM tool_approvals")?;
    let rows = stmt.query_map([], |r| {
        Ok(ToolApprovalRecord {
            server: r.get(0)?,
            fingerprint: r.get(1)?,
            tool: r.get(2)?,
            approved_by: r.get(3)?,
            at_ms: u(r.get(4)?),
            reason: r.get(5)?,
        })
    })?;
    for row in rows {
        let a = row?;
        state.approvals.insert((a.server.clone(), a.fingerprint.clone()), a);
    }
    let mut stmt = conn.prepare("SELECT fingerprint, server, tool, severity, rules, scanned_ms FROM definition_scans")?;
    let rows = stmt.query_map([], |r| {
        let sev: Option<String> = r.get(3)?;
        let severity = match sev {
            Some(_) => Some(severity(r, 3)?),
            None => None,
        };
        let rules: String = r.get(4)?;
        Ok(DefinitionScan {
            fingerprint: r.get(0)?,
            server: r.get(1)?,
            tool: r.get(2)?,
            severity,
            rules: rules.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect(),
            scanned_ms: u(r.get(5)?),
        })
    })?;
    for row in rows {
        let d = row?;
        state.scans.insert(d.fingerprint.clone(), d);
    }
    let mut stmt = conn.prepare("SELECT server, first_ms, voices, held FROM provisional_servers")?;
    let rows = stmt.query_map([], |r| {
        let (voices, held): (String, String) = (r.get(2)?, r.get(3)?);
        let p = provisional(u(r.get(1)?), &voices, &held).map_err(|e| bad(2, "provisional server", &e))?;
        Ok((r.get::<_, String>(0)?, p))
    })?;
    for row in rows {
        let (name, p) = row?;
        state.provisional.insert(name, p);
    }
    Ok(state)
}

/// A provisional server from its stored columns (JSON), or why not.
pub fn provisional(first_ms: u64, voices: &str, held: &str) -> Result<Provisional, String> {
    Ok(Provisional {
        first_ms,
        voices: serde_json::from_str(voices).map_err(|e| format!("voices: {e}"))?,
        held: serde_json::from_str(held).map_err(|e| format!("held: {e}"))?,
    })
}

/// The stored columns (JSON) of a provisional server.
pub fn provisional_columns(p: &Provisional) -> (String, String) {
    // Maps of strings to integers and plain structs: serializing cannot fail.
    (serde_json::to_string(&p.voices).unwrap_or_default(), serde_json::to_string(&p.held).unwrap_or_default())
}

pub fn upsert_provisional(conn: &Connection, server: &str, p: &Provisional) -> rusqlite::Result<()> {
    let (voices, held) = provisional_columns(p);
    conn.prepare_cached(
        "INSERT INTO provisional_servers (server, first_ms, voices, held) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (server) DO UPDATE SET voices = excluded.voices, held = excluded.held",
    )?
    .execute(params![server, i(p.first_ms), voices, held])?;
    Ok(())
}

pub fn delete_provisional(conn: &Connection, server: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM provisional_servers WHERE server = ?1")?.execute(params![server])?;
    Ok(())
}

pub fn insert_scan(conn: &Connection, d: &DefinitionScan) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO definition_scans (fingerprint, server, tool, severity, rules, scanned_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (fingerprint) DO NOTHING",
    )?
    .execute(params![d.fingerprint, d.server, d.tool, d.severity.map(Severity::as_str), d.rules.join(","), i(d.scanned_ms)])?;
    Ok(())
}

pub fn delete_scan(conn: &Connection, fingerprint: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM definition_scans WHERE fingerprint = ?1")?.execute(params![fingerprint])?;
    Ok(())
}

/// Writes a held change as it now stands.
pub fn upsert_held(conn: &Connection, h: &HeldChange) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO held_changes (server, fingerprint, tool, old_fingerprint, why, reported_by, first_ms, last_ms, reports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (server, fingerprint) DO UPDATE SET tool = excluded.tool, old_fingerprint = excluded.old_fingerprint,
            why = excluded.why, reported_by = excluded.reported_by, last_ms = excluded.last_ms, reports = excluded.reports",
    )?
    .execute(params![
        h.server,
        h.fingerprint,
        h.tool,
        h.old_fingerprint,
        h.why.as_deref().map(|v| truncate(v, MAX_EVIDENCE)),
        h.reported_by,
        i(h.first_ms),
        i(h.last_ms),
        i(h.reports)
    ])?;
    Ok(())
}

pub fn delete_held(conn: &Connection, server: &str, fingerprint: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM held_changes WHERE server = ?1 AND fingerprint = ?2")?.execute(params![server, fingerprint])?;
    Ok(())
}

pub fn insert_approval(conn: &Connection, a: &ToolApprovalRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO tool_approvals (server, fingerprint, tool, approved_by, at_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![a.server, a.fingerprint, a.tool, a.approved_by, i(a.at_ms), a.reason])?;
    Ok(())
}

pub fn delete_approval(conn: &Connection, server: &str, fingerprint: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM tool_approvals WHERE server = ?1 AND fingerprint = ?2")?.execute(params![server, fingerprint])?;
    Ok(())
}

pub fn upsert_server(conn: &Connection, name: &str, s: &ServerState) -> rusqlite::Result<()> {
    let q = s.quarantine.as_ref();
    conn.prepare_cached(
        "INSERT INTO servers (name, first_seen_ms, successes, failures, evidence_ms, penalty, penalty_ms, quarantined,
                quarantine_reason, quarantine_by, quarantine_ms, quarantine_auto, auto_armed, released_ms,
                total_success, total_failures, total_slow, latency_count, latency_sum_ms, last_report_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         ON CONFLICT (name) DO UPDATE SET
            successes = excluded.successes, failures = excluded.failures, evidence_ms = excluded.evidence_ms,
            penalty = excluded.penalty, penalty_ms = excluded.penalty_ms, quarantined = excluded.quarantined,
            quarantine_reason = excluded.quarantine_reason, quarantine_by = excluded.quarantine_by,
            quarantine_ms = excluded.quarantine_ms, quarantine_auto = excluded.quarantine_auto,
            auto_armed = excluded.auto_armed, released_ms = excluded.released_ms,
            total_success = excluded.total_success, total_failures = excluded.total_failures,
            total_slow = excluded.total_slow, latency_count = excluded.latency_count,
            latency_sum_ms = excluded.latency_sum_ms, last_report_ms = excluded.last_report_ms",
    )?
    .execute(params![
        name,
        i(s.first_seen_ms),
        s.evidence.successes,
        s.evidence.failures,
        i(s.evidence.updated_ms),
        s.security.penalty,
        i(s.security.updated_ms),
        q.is_some(),
        q.map(|q| q.reason.as_str()),
        q.map(|q| q.by.as_str()),
        q.map(|q| i(q.since_ms)),
        q.map(|q| q.automatic),
        s.auto_armed,
        s.released_ms.map(i),
        i(s.totals.success),
        i(s.totals.failures),
        i(s.totals.slow),
        i(s.totals.latency_count),
        i(s.totals.latency_sum_ms),
        s.totals.last_report_ms.map(i),
    ])?;
    Ok(())
}

pub fn batch_seen(conn: &Connection, token_name: &str, batch_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM batches WHERE token_name = ?1 AND batch_id = ?2")?
        .exists(params![token_name, batch_id])
}

pub fn insert_batch(conn: &Connection, token_name: &str, batch_id: &str, sidecar: &str, now: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO batches (token_name, batch_id, sidecar, received_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![token_name, batch_id, sidecar, i(now)])?;
    Ok(())
}

/// Records a sidecar's security event; `(row id, counted)`. The same finding (rule, severity,
/// tool, new fingerprint) first seen at or after `dedup_since` is folded into its row and not
/// counted again. Evidence is cut to `MAX_EVIDENCE` bytes.
pub fn record_security_event(
    conn: &Connection,
    server: &str,
    reported_by: &str,
    batch_id: &str,
    e: &SecurityEvent,
    now: u64,
    dedup_since: Option<u64>,
) -> rusqlite::Result<(i64, bool)> {
    if let Some(since) = dedup_since {
        let existing: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM security_events WHERE server = ?1 AND rule = ?2 AND severity = ?3 AND tool IS ?4
                   AND new_fingerprint IS ?5 AND first_ms >= ?6 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![server, e.rule, e.severity.as_str(), e.tool, e.new_fingerprint, i(since)], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            conn.prepare_cached("UPDATE security_events SET reports = reports + 1, last_ms = ?2 WHERE id = ?1")?
                .execute(params![id, i(now)])?;
            return Ok((id, false));
        }
    }
    conn.prepare_cached(
        "INSERT INTO security_events (server, first_ms, last_ms, reports, reported_by, batch_id, rule, severity, tool,
                evidence, old_fingerprint, new_fingerprint)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        server,
        i(now),
        reported_by,
        batch_id,
        e.rule,
        e.severity.as_str(),
        e.tool,
        e.evidence.as_deref().map(|v| truncate(v, MAX_EVIDENCE)),
        e.old_fingerprint,
        e.new_fingerprint
    ])?;
    Ok((conn.last_insert_rowid(), true))
}

/// Records a flag; `(row id, counted)`, deduplicated like security events (by rule, severity,
/// tool).
pub fn record_flag(
    conn: &Connection,
    flagged_by: &str,
    f: &FlagRequest,
    description: Option<&str>,
    now: u64,
    dedup_since: Option<u64>,
) -> rusqlite::Result<(i64, bool)> {
    if let Some(since) = dedup_since {
        let existing: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM flags WHERE server = ?1 AND rule = ?2 AND severity = ?3 AND tool IS ?4 AND first_ms >= ?5
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![f.server, f.rule, f.severity.as_str(), f.tool, i(since)], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            conn.prepare_cached("UPDATE flags SET reports = reports + 1, last_ms = ?2 WHERE id = ?1")?
                .execute(params![id, i(now)])?;
            return Ok((id, false));
        }
    }
    conn.prepare_cached(
        "INSERT INTO flags (server, first_ms, last_ms, reports, flagged_by, severity, rule, tool, description)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![f.server, i(now), flagged_by, f.severity.as_str(), f.rule, f.tool, description])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "DELETE FROM flags WHERE server = ?1 AND id < (SELECT id FROM flags WHERE server = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![f.server, FLAGS_KEPT - 1])?;
    Ok((id, true))
}

/// Keeps the newest `EVENTS_KEPT` security event records of `server`.
pub fn trim_security_events(conn: &Connection, server: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM security_events WHERE server = ?1
           AND id < (SELECT id FROM security_events WHERE server = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![server, EVENTS_KEPT - 1])?;
    Ok(())
}

pub fn upsert_rating(
    conn: &Connection,
    rater: &str,
    subject: &Subject,
    value: f64,
    comment: Option<&str>,
    now: u64,
) -> rusqlite::Result<()> {
    let (kind, name) = match subject {
        Subject::Server(n) => ("server", n),
        Subject::Rater(n) => ("rater", n),
    };
    conn.prepare_cached(
        "INSERT INTO ratings (rater, subject_kind, subject, value, comment, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (rater, subject_kind, subject) DO UPDATE SET
            value = excluded.value, comment = excluded.comment, at_ms = excluded.at_ms",
    )?
    .execute(params![rater, kind, name, value, comment, i(now)])?;
    Ok(())
}

pub fn insert_audit(
    conn: &Connection,
    now: u64,
    actor: &str,
    action: AuditAction,
    server: &str,
    reason: &str,
    score: f64,
) -> rusqlite::Result<i64> {
    // The id is part of the hash, so it is chosen here: one past the highest ever issued.
    let id: i64 = conn
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0),
                        COALESCE((SELECT MAX(id) FROM audit), 0)) + 1",
        )?
        .query_row([], |r| r.get(0))?;
    let prev = audit::head(conn)?;
    let f = audit::Fields { id, at_ms: i(now), actor, action: action.as_str(), server, reason, score };
    let hash = audit::to_hex(&audit::link(&prev, &f));
    conn.prepare_cached(
        "INSERT INTO audit (id, at_ms, actor, action, server, reason, score, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![id, i(now), actor, action.as_str(), server, reason, score, hash])?;
    Ok(id)
}

/// Audit entries, newest first: of `server` (or all), with ids below `before_id`.
pub fn audit(conn: &Connection, server: Option<&str>, before_id: Option<i64>, limit: u32) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit
         WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![server, before_id, limit], |r| {
        let action: String = r.get(3)?;
        Ok(AuditEntry {
            id: r.get(0)?,
            at_ms: u(r.get(1)?),
            actor: r.get(2)?,
            action: AuditAction::parse(&action).ok_or_else(|| bad(3, "audit action", &action))?,
            server: r.get(4)?,
            reason: r.get(5)?,
            score: r.get(6)?,
            hash: r.get(7)?,
        })
    })?;
    rows.collect()
}

pub fn insert_sample(conn: &Connection, server: &str, now: u64, score: f64, state: TrustState) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO history (server, at_ms, score, state) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![server, i(now), score, state_str(state)])?;
    Ok(())
}

pub fn history(conn: &Connection, server: &str, since: u64) -> rusqlite::Result<Vec<HistorySample>> {
    let mut stmt =
        conn.prepare_cached("SELECT at_ms, score, state FROM history WHERE server = ?1 AND at_ms >= ?2 ORDER BY at_ms, rowid")?;
    let rows = stmt.query_map(params![server, i(since)], |r| {
        Ok(HistorySample { at_ms: u(r.get(0)?), score: r.get(1)?, state: trust_state(r, 2)? })
    })?;
    rows.collect()
}

pub fn security_events(conn: &Connection, server: &str, limit: u32) -> rusqlite::Result<Vec<SecurityEventRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, first_ms, last_ms, reports, reported_by, rule, severity, tool, evidence, old_fingerprint, new_fingerprint
         FROM security_events WHERE server = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![server, limit], |r| {
        Ok(SecurityEventRecord {
            id: r.get(0)?,
            first_ms: u(r.get(1)?),
            last_ms: u(r.get(2)?),
            reports: u(r.get(3)?),
            reported_by: r.get(4)?,
            rule: r.get(5)?,
            severity: severity(r, 6)?,
            tool: r.get(7)?,
            evidence: r.get(8)?,
            old_fingerprint: r.get(9)?,
            new_fingerprint: r.get(10)?,
        })
    })?;
    rows.collect()
}

pub fn flags(conn: &Connection, server: &str, limit: u32) -> rusqlite::Result<Vec<FlagRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, first_ms, last_ms, reports, flagged_by, rule, severity, tool, description
         FROM flags WHERE server = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![server, limit], |r| {
        Ok(FlagRecord {
            id: r.get(0)?,
            first_ms: u(r.get(1)?),
            last_ms: u(r.get(2)?),
            reports: u(r.get(3)?),
            flagged_by: r.get(4)?,
            rule: r.get(5)?,
            severity: severity(r, 6)?,
            tool: r.get(7)?,
            description: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// The ratings of `server` with their time and comment (standing is filled in by the caller).
pub fn server_ratings(conn: &Connection, server: &str) -> rusqlite::Result<Vec<RaterRating>> {
    let mut stmt = conn.prepare_cached(
        "SELECT rater, value, at_ms, comment FROM ratings WHERE subject_kind = 'server' AND subject = ?1",
    )?;
    let rows = stmt.query_map(params![server], |r| {
        Ok(RaterRating { rater: r.get(0)?, value: r.get(1)?, standing: 0.0, at_ms: u(r.get(2)?), comment: r.get(3)? })
    })?;
    rows.collect()
}

/// Deletes history, batch ids, spent budgets and counted findings past their retention.
pub fn prune(conn: &Connection, history_before: u64, batches_before: u64, budget_before: u64, seen_before: u64) -> rusqlite::Result<(usize, usize)> {
    let h = conn.execute("DELETE FROM history WHERE at_ms < ?1", [i(history_before)])?;
    let b = conn.execute("DELETE FROM batches WHERE received_ms < ?1", [i(batches_before)])?;
    conn.execute("DELETE FROM policy_budget WHERE at_ms < ?1", [i(budget_before)])?;
    conn.execute("DELETE FROM policy_seen WHERE at_ms < ?1", [i(seen_before)])?;
    Ok((h, b))
}

/// The ingestion policy's durable memory.
pub fn load_policy(conn: &Connection) -> rusqlite::Result<policy::Memory> {
    let mut m = policy::Memory::default();
    let mut stmt = conn.prepare("SELECT server, phase, kinds, at_ms FROM policy_kinds")?;
    let rows = stmt.query_map([], |r| {
        let phase: String = r.get(1)?;
        let kinds: String = r.get(2)?;
        Ok(KindsEntry {
            server: r.get(0)?,
            phase: Phase::parse(&phase).ok_or_else(|| bad(1, "policy phase", &phase))?,
            kinds: kinds.split(',').filter(|k| !k.is_empty()).map(str::to_string).collect(),
            at_ms: u(r.get(3)?),
        })
    })?;
    m.kinds = rows.collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare("SELECT credential, spent_on, server, at_ms FROM policy_budget")?;
    let rows = stmt.query_map([], |r| {
        let on: String = r.get(1)?;
        Ok(BudgetEntry {
            credential: r.get(0)?,
            on: Spent::parse(&on).ok_or_else(|| bad(1, "budget kind", &on))?,
            server: r.get(2)?,
            at_ms: u(r.get(3)?),
        })
    })?;
    m.budget = rows.collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare("SELECT server, tool, kind, severity, at_ms FROM policy_seen")?;
    let rows = stmt.query_map([], |r| {
        Ok(SeenEntry { server: r.get(0)?, tool: r.get(1)?, kind: r.get(2)?, severity: severity(r, 3)?, at_ms: u(r.get(4)?) })
    })?;
    m.seen = rows.collect::<rusqlite::Result<_>>()?;
    Ok(m)
}

/// Stores one change of the policy's durable memory.
pub fn policy_change(conn: &Connection, c: &Change) -> rusqlite::Result<()> {
    match c {
        Change::Kinds(k) => {
            conn.prepare_cached(
                "INSERT INTO policy_kinds (server, phase, kinds, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (server, phase) DO UPDATE SET kinds = excluded.kinds, at_ms = excluded.at_ms",
            )?
            .execute(params![k.server, k.phase.as_str(), k.kinds.join(","), i(k.at_ms)])?;
        }
        Change::ClearKinds { server, phase } => {
            conn.prepare_cached("DELETE FROM policy_kinds WHERE server = ?1 AND phase = ?2")?
                .execute(params![server, phase.as_str()])?;
        }
        Change::Budget(b) => {
            conn.prepare_cached("INSERT INTO policy_budget (credential, spent_on, server, at_ms) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![b.credential, b.on.as_str(), b.server, i(b.at_ms)])?;
        }
        Change::Seen(e) | Change::Unseen(e) => {
            conn.prepare_cached("DELETE FROM policy_seen WHERE server = ?1 AND tool IS ?2 AND kind = ?3 AND severity = ?4")?
                .execute(params![e.server, e.tool, e.kind, e.severity.as_str()])?;
            if matches!(c, Change::Seen(_)) {
                conn.prepare_cached("INSERT INTO policy_seen (server, tool, kind, severity, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![e.server, e.tool, e.kind, e.severity.as_str(), i(e.at_ms)])?;
            }
        }
    }
    Ok(())
}

/// Removes everything stored about `servers` but their audit entries (the log is append-only).
pub fn forget_servers(conn: &Connection, servers: &[String]) -> rusqlite::Result<()> {
    for sql in [
        "DELETE FROM servers WHERE name = ?1",
        "DELETE FROM ratings WHERE subject_kind = 'server' AND subject = ?1",
        "DELETE FROM security_events WHERE server = ?1",
        "DELETE FROM flags WHERE server = ?1",
        "DELETE FROM history WHERE server = ?1",
        "DELETE FROM policy_kinds WHERE server = ?1",
        "DELETE FROM policy_seen WHERE server = ?1",
        "DELETE FROM held_changes WHERE server = ?1",
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        for server in servers {
            stmt.execute([server])?;
        }
    }
    Ok(())
}

/// Deletes a rater's rating of `subject` (a withdrawn vouch leaves nothing behind).
pub fn delete_rating(conn: &Connection, rater: &str, subject: &Subject) -> rusqlite::Result<()> {
    let (kind, name) = match subject {
        Subject::Server(n) => ("server", n),
        Subject::Rater(n) => ("rater", n),
    };
    conn.prepare_cached("DELETE FROM ratings WHERE rater = ?1 AND subject_kind = ?2 AND subject = ?3")?
        .execute(params![rater, kind, name])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_database_fails_the_commit_and_keeps_what_was_committed() {
        let dir = std::env::temp_dir().join(format!("mcp-warden-store-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = open(&dir.join("trust.db")).unwrap();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let mut committed = 0;
        let failure = loop {
            let tx = conn.transaction().unwrap();
            let id = format!("{committed:0>200}");
            let r = insert_batch(&tx, "sidecar", &id, "pod", 1).and_then(|()| tx.commit());
            match r {
                Ok(()) => committed += 1,
                Err(e) => break e,
            }
            assert!(committed < 10_000, "never full");
        };
        assert_eq!(failure.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull), "{failure}");
        assert!(!is_corruption(&failure));
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0)).unwrap();
        assert_eq!(n, committed);
        quick_check(&conn).unwrap();
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

