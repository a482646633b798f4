//! The database behind the engine, one interface over two backends: SQLite (the embedded
//! default, one process) and PostgreSQL (any number of replicas on one database). The engine
//! calls these; [`crate::store`] and [`crate::pg`] hold each backend's SQL.

use crate::admission::Provisional;
use crate::error::ApiError;
use crate::state::{ServerState, State};
use crate::views::{
    AuditAction, AuditEntry, AuditVerification, DefinitionScan, FlagRecord, HeldChange, HistorySample, RaterRating,
    SecurityEventRecord, ToolApprovalRecord,
};
use crate::pg_tls::{Check, TlsUrl};
use crate::{audit, pg, policy, store};
use mcp_warden_core::trust::wire::{FlagRequest, SecurityEvent, Subject, TrustState};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Where the state lives: a SQLite file, or a PostgreSQL URL (`postgres://` or `postgresql://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `postgres://...` and `postgresql://...` name a PostgreSQL database; anything else is a
    /// SQLite file path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }
}

/// For logs and errors: the password of a URL is never shown.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Sqlite(p.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Sqlite(p)
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

pub use crate::db_error::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::storage(e)
    }
}

/// What a replica's cache is rebuilt from, read in one snapshot.
pub struct Snapshot {
    pub state: State,
    /// The ingestion policy's durable memory.
    pub policy: policy::Memory,
    pub version: u64,
    /// The published document as stored (PostgreSQL only): (version, JSON).
    pub publication: Option<(u64, String)>,
    /// The change counter this snapshot reflects (PostgreSQL only).
    pub changes: Option<i64>,
}

/// A PostgreSQL connection that reconnects by itself after the database comes back.
pub struct Pg {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    shown: String,
    client: Option<postgres::Client>,
    /// Counts connections made: the leader lock belongs to one session.
    session: u64,
    leader_session: Option<u64>,
}

/// How long connecting, and waiting for a lock, may take before the request fails with 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const LOCK_TIMEOUT_MS: u32 = 5_000;

impl Pg {
    fn open(url: &str) -> Result<Pg, Error> {
        let invalid = |e: String| Error::Invalid(format!("invalid PostgreSQL URL {}: {e}", redact(url)));
        let tls = TlsUrl::parse(url).map_err(invalid)?;
        let connector = tls.connector().map_err(invalid)?;
        let mut config: postgres::Config = tls.url.parse().map_err(|e: postgres::Error| invalid(e.to_string()))?;
        let shown = redact(url);
        match (tls.mode, tls.check) {
            ("disable", _) => info!(db = %shown, "database connection without TLS (sslmode=disable)"),
            (mode, Check::Nothing) => info!(
                db = %shown,
                "database connection: TLS ({mode}), the server's certificate not checked (sslmode=verify-full with sslrootcert checks it)"
            ),
            (_, Check::Chain) => info!(db = %shown, "database connection: TLS, the server's certificate chain checked"),
            (_, Check::Full) => info!(db = %shown, "database connection: TLS, the server's certificate and name checked"),
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.options(&format!("-c lock_timeout={LOCK_TIMEOUT_MS}"));
        config.application_name("mcp-warden-aggregator");
        let mut pg = Pg { config, tls: connector, shown: redact(url), client: None, session: 0, leader_session: None };
        pg.client()?;
        Ok(pg)
    }

    /// The live client, connecting first if there is none or the last one broke.
    fn client(&mut self) -> Result<&mut postgres::Client, Error> {
        if self.client.as_ref().is_some_and(postgres::Client::is_closed) {
            warn!(db = %self.shown, "connection to the database lost");
            self.drop_client();
        }
        if self.client.is_none() {
            let mut client = self.config.connect(self.tls.clone())?;
            pg::migrate(&mut client)?;
            self.session += 1;
            if self.session > 1 {
                info!(db = %self.shown, "reconnected to the database");
            }
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| Error::Invalid("no database connection".into()))
    }

    /// The sync client closes through its own runtime, which must not run inside another one
    /// (this value may be dropped on an async task): close it on a thread of its own.
    fn drop_client(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.drop_client();
    }
}

pub enum Db {
    Sqlite { conn: rusqlite::Connection, path: PathBuf },
    Postgres(Box<Pg>),
}

/// One write transaction.
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

impl Db {
    /// Opens the SQLite file (see [`store::open`]) or connects to PostgreSQL and migrates.
    pub fn open(location: &Location) -> Result<Db, Error> {
        match location {
            Location::Sqlite(path) => Ok(Db::Sqlite { conn: store::open(path)?, path: path.clone() }),
            Location::Postgres(url) => Ok(Db::Postgres(Box::new(Pg::open(url)?))),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The SQLite connection and file (backups and injected faults are SQLite's).
    pub fn sqlite(&mut self) -> Option<(&mut rusqlite::Connection, &Path)> {
        match self {
            Db::Sqlite { conn, path } => Some((conn, path.as_path())),
            Db::Postgres(_) => None,
        }
    }

    /// A marker that grows with every row written (SQLite); PostgreSQL's commits always wrote.
    pub fn total_changes(&self) -> u64 {
        match self {
            Db::Sqlite { conn, .. } => conn.total_changes(),
            Db::Postgres(_) => 0,
        }
    }

    pub fn wrote_since(&self, marker: u64) -> bool {
        match self {
            Db::Sqlite { conn, .. } => conn.total_changes() > marker,
            Db::Postgres(_) => true,
        }
    }

    pub fn transaction(&mut self) -> Result<Tx<'_>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(Tx::Sqlite(conn.transaction()?)),
            Db::Postgres(pg) => Ok(Tx::Postgres(pg.client()?.transaction()?)),
        }
    }

    /// Everything the cache is rebuilt from, in one consistent read.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(sqlite_snapshot(conn)?),
            Db::Postgres(pg) => {
                let mut tx = pg
                    .client()?
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let snap = pg_snapshot(&mut tx)?;
                tx.commit()?;
                Ok(snap)
            }
        }
    }

    /// The change counter (PostgreSQL): a follower reloads when it moved.
    pub fn changes(&mut self) -> Result<Option<i64>, Error> {
        match self {
            Db::Sqlite { .. } => Ok(None),
            Db::Postgres(pg) => Ok(Some(pg::changes(pg.client()?)?)),
        }
    }

    /// Is this process the one that runs the periodic evaluation? SQLite: always (one process
    /// holds the file). PostgreSQL: whoever holds the leader lock; tried again on every call.
    pub fn lead(&mut self) -> Result<bool, Error> {
        match self {
            Db::Sqlite { .. } => Ok(true),
            Db::Postgres(pg) => {
                pg.client()?;
                if pg.leader_session == Some(pg.session) {
                    // Still the same session: the lock is ours as long as it lives.
                    pg.client()?.simple_query("SELECT 1")?;
                    return Ok(true);
                }
                if pg::try_lead(pg.client()?)? {
                    pg.leader_session = Some(pg.session);
                    info!(db = %pg.shown, "this replica now leads the periodic evaluation");
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Does this process hold the leader lock (as far as it knows: its session is alive)?
    pub fn is_leader(&self) -> bool {
        match self {
            Db::Sqlite { .. } => true,
            Db::Postgres(pg) => {
                pg.leader_session == Some(pg.session) && pg.client.as_ref().is_some_and(|c| !c.is_closed())
            }
        }
    }

    /// Can the database be reached (health checks)?
    pub fn ping(&mut self) -> Result<(), Error> {
        match self {
            Db::Sqlite { .. } => Ok(()),
            Db::Postgres(pg) => {
                pg.client()?.simple_query("SELECT 1")?;
                Ok(())
            }
        }
    }

    pub fn history(&mut self, server: &str, since: u64) -> Result<Vec<HistorySample>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(store::history(conn, server, since)?),
            Db::Postgres(pg) => pg::history(pg.client()?, server, since),
        }
    }

    pub fn security_events(&mut self, server: &str, limit: u32) -> Result<Vec<SecurityEventRecord>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(store::security_events(conn, server, limit)?),
            Db::Postgres(pg) => pg::security_events(pg.client()?, server, limit),
        }
    }

    pub fn flags(&mut self, server: &str, limit: u32) -> Result<Vec<FlagRecord>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(store::flags(conn, server, limit)?),
            Db::Postgres(pg) => pg::flags(pg.client()?, server, limit),
        }
    }

    pub fn server_ratings(&mut self, server: &str) -> Result<Vec<RaterRating>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(store::server_ratings(conn, server)?),
            Db::Postgres(pg) => pg::server_ratings(pg.client()?, server),
        }
    }

    pub fn audit(&mut self, server: Option<&str>, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(store::audit(conn, server, before_id, limit)?),
            Db::Postgres(pg) => pg::audit(pg.client()?, server, before_id, limit),
        }
    }

    /// The newest audit entry (id, hash), if any.
    pub fn audit_head(&mut self) -> Result<Option<(i64, String)>, Error> {
        let sql = "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1";
        match self {
            Db::Sqlite { conn, .. } => {
                use rusqlite::OptionalExtension;
                Ok(conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
            }
            Db::Postgres(pg) => Ok(pg.client()?.query_opt(sql, &[])?.map(|r| (r.get(0), r.get(1)))),
        }
    }

    /// One page of the audit log for a verification that runs away from the engine (see
    /// [`audit::page`]).
    pub fn audit_page(&mut self, after: i64, limit: u32) -> Result<(Vec<audit::Row>, Option<Option<i64>>), Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(audit::page(conn, after, limit)?),
            Db::Postgres(pg) => {
                let mut tx = pg
                    .client()?
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let page = pg::audit_page(&mut tx, after, limit)?;
                tx.commit()?;
                Ok(page)
            }
        }
    }

    pub fn verify_audit(&mut self) -> Result<AuditVerification, Error> {
        match self {
            Db::Sqlite { conn, .. } => Ok(audit::verify(conn)?),
            Db::Postgres(pg) => {
                let mut tx = pg
                    .client()?
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let v = pg::verify_audit(&mut tx)?;
                tx.commit()?;
                Ok(v)
            }
        }
    }
}

fn sqlite_snapshot(conn: &rusqlite::Connection) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        state: store::load(conn)?,
        policy: store::load_policy(conn)?,
        version: store::version(conn)?,
        publication: None,
        changes: None,
    })
}

fn pg_snapshot(c: &mut impl postgres::GenericClient) -> Result<Snapshot, Error> {
    Ok(Snapshot {
        changes: Some(pg::changes(c)?),
        state: pg::load(c)?,
        policy: pg::load_policy(c)?,
        version: pg::version(c)?,
        publication: pg::publication(c)?,
    })
}

impl Tx<'_> {
    /// PostgreSQL: waits for the replicas' write lock and returns the change counter as it
    /// stands under it. SQLite's transaction is the only writer already.
    pub fn lock_for_write(&mut self) -> Result<Option<i64>, Error> {
        match self {
            Tx::Sqlite(_) => Ok(None),
            Tx::Postgres(tx) => Ok(Some(pg::lock_for_write(tx)?)),
        }
    }

    /// The whole state as this transaction sees it (under the write lock: the latest).
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        match self {
            Tx::Sqlite(tx) => Ok(sqlite_snapshot(tx)?),
            Tx::Postgres(tx) => pg_snapshot(tx),
        }
    }

    /// Counts this write for the followers (PostgreSQL); the new counter.
    pub fn bump_changes(&mut self) -> Result<Option<i64>, Error> {
        match self {
            Tx::Sqlite(_) => Ok(None),
            Tx::Postgres(tx) => Ok(Some(pg::bump_changes(tx)?)),
        }
    }

    /// Records a new published version (PostgreSQL also stores the document for the replicas).
    pub fn publish(&mut self, version: u64, document: &[u8]) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::set_version(tx, version)?),
            Tx::Postgres(tx) => {
                let doc = std::str::from_utf8(document).map_err(|e| Error::Invalid(format!("scores document: {e}")))?;
                pg::publish(tx, version, doc)
            }
        }
    }

    pub fn commit(self) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.commit()?),
            Tx::Postgres(tx) => Ok(tx.commit()?),
        }
    }

    pub fn upsert_server(&mut self, name: &str, s: &ServerState) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::upsert_server(tx, name, s)?),
            Tx::Postgres(tx) => pg::upsert_server(tx, name, s),
        }
    }

    pub fn batch_seen(&mut self, token_name: &str, batch_id: &str) -> Result<bool, Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::batch_seen(tx, token_name, batch_id)?),
            Tx::Postgres(tx) => pg::batch_seen(tx, token_name, batch_id),
        }
    }

    pub fn insert_batch(&mut self, token_name: &str, batch_id: &str, sidecar: &str, now: u64) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::insert_batch(tx, token_name, batch_id, sidecar, now)?),
            Tx::Postgres(tx) => pg::insert_batch(tx, token_name, batch_id, sidecar, now),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_security_event(
        &mut self,
        server: &str,
        reported_by: &str,
        batch_id: &str,
        e: &SecurityEvent,
        now: u64,
        dedup_since: Option<u64>,
    ) -> Result<(i64, bool), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::record_security_event(tx, server, reported_by, batch_id, e, now, dedup_since)?),
            Tx::Postgres(tx) => pg::record_security_event(tx, server, reported_by, batch_id, e, now, dedup_since),
        }
    }

    pub fn record_flag(
        &mut self,
        flagged_by: &str,
        f: &FlagRequest,
        description: Option<&str>,
        now: u64,
        dedup_since: Option<u64>,
    ) -> Result<(i64, bool), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::record_flag(tx, flagged_by, f, description, now, dedup_since)?),
            Tx::Postgres(tx) => pg::record_flag(tx, flagged_by, f, description, now, dedup_since),
        }
    }

    pub fn trim_security_events(&mut self, server: &str) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::trim_security_events(tx, server)?),
            Tx::Postgres(tx) => pg::trim_security_events(tx, server),
        }
    }

    pub fn upsert_rating(&mut self, rater: &str, subject: &Subject, value: f64, comment: Option<&str>, now: u64) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::upsert_rating(tx, rater, subject, value, comment, now)?),
            Tx::Postgres(tx) => pg::upsert_rating(tx, rater, subject, value, comment, now),
        }
    }

    /// Removes a rating (a withdrawn vouch leaves nothing behind).
    pub fn delete_rating(&mut self, rater: &str, subject: &Subject) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::delete_rating(tx, rater, subject)?),
            Tx::Postgres(tx) => pg::delete_rating(tx, rater, subject),
        }
    }

    pub fn insert_audit(
        &mut self,
        now: u64,
        actor: &str,
        action: AuditAction,
        server: &str,
        reason: &str,
        score: f64,
    ) -> Result<i64, Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::insert_audit(tx, now, actor, action, server, reason, score)?),
            Tx::Postgres(tx) => pg::insert_audit(tx, now, actor, action, server, reason, score),
        }
    }

    pub fn upsert_held(&mut self, h: &HeldChange) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::upsert_held(tx, h)?),
            Tx::Postgres(tx) => pg::upsert_held(tx, h),
        }
    }

    pub fn delete_held(&mut self, server: &str, fingerprint: &str) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::delete_held(tx, server, fingerprint)?),
            Tx::Postgres(tx) => pg::delete_held(tx, server, fingerprint),
        }
    }

    pub fn insert_approval(&mut self, a: &ToolApprovalRecord) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::insert_approval(tx, a)?),
            Tx::Postgres(tx) => pg::insert_approval(tx, a),
        }
    }

    pub fn delete_approval(&mut self, server: &str, fingerprint: &str) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::delete_approval(tx, server, fingerprint)?),
            Tx::Postgres(tx) => pg::delete_approval(tx, server, fingerprint),
        }
    }

    pub fn insert_scan(&mut self, d: &DefinitionScan) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::insert_scan(tx, d)?),
            Tx::Postgres(tx) => pg::insert_scan(tx, d),
        }
    }

    pub fn delete_scan(&mut self, fingerprint: &str) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::delete_scan(tx, fingerprint)?),
            Tx::Postgres(tx) => pg::delete_scan(tx, fingerprint),
        }
    }

    pub fn insert_sample(&mut self, server: &str, now: u64, score: f64, state: TrustState) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::insert_sample(tx, server, now, score, state)?),
            Tx::Postgres(tx) => pg::insert_sample(tx, server, now, score, state),
        }
    }

    pub fn prune(&mut self, history_before: u64, batches_before: u64, budget_before: u64, seen_before: u64) -> Result<(usize, usize), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::prune(tx, history_before, batches_before, budget_before, seen_before)?),
            Tx::Postgres(tx) => pg::prune(tx, history_before, batches_before, budget_before, seen_before),
        }
    }

    /// Stores a provisional server (admission.rs), or removes it (`None`: admitted or expired).
    pub fn put_provisional(&mut self, server: &str, p: Option<&Provisional>) -> Result<(), Error> {
        match (self, p) {
            (Tx::Sqlite(tx), Some(p)) => Ok(store::upsert_provisional(tx, server, p)?),
            (Tx::Sqlite(tx), None) => Ok(store::delete_provisional(tx, server)?),
            (Tx::Postgres(tx), Some(p)) => pg::upsert_provisional(tx, server, p),
            (Tx::Postgres(tx), None) => pg::delete_provisional(tx, server),
        }
    }

    /// Stores one change of the ingestion policy's durable memory.
    pub fn policy_change(&mut self, c: &policy::Change) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::policy_change(tx, c)?),
            Tx::Postgres(tx) => pg::policy_change(tx, c),
        }
    }

    /// Removes what is stored about `servers` (their audit entries stay).
    pub fn forget_servers(&mut self, servers: &[String]) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => Ok(store::forget_servers(tx, servers)?),
            Tx::Postgres(tx) => pg::forget_servers(tx, servers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_postgres_and_anything_else_is_a_file() {
        assert_eq!(Location::parse("postgres://u@h/db"), Location::Postgres("postgres://u@h/db".into()));
        assert_eq!(Location::parse("postgresql://u@h/db"), Location::Postgres("postgresql://u@h/db".into()));
        assert_eq!(Location::parse("/var/lib/trust.db"), Location::Sqlite(PathBuf::from("/var/lib/trust.db")));
        assert_eq!(Location::parse("postgres.db"), Location::Sqlite(PathBuf::from("postgres.db")));
    }

    #[test]
    fn a_password_is_never_shown() {
        let shown = Location::parse("postgres://warden:s3cret@db.example:5432/warden").to_string();
        assert_eq!(shown, "postgres://warden:***@db.example:5432/warden");
        // An '@' inside the password: everything before the last '@' is the credentials.
        assert_eq!(redact("postgres://warden:a@b@host/db"), "postgres://warden:***@host/db");
        assert_eq!(redact("postgres://warden@host/db"), "postgres://warden@host/db");
    }
}
