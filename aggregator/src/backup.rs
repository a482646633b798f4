//! Backup files: checking one (SQLite's integrity check, the schema, the audit chain), and
//! restoring one in place of a stopped aggregator's database. Backups themselves are made by the
//! running service (`POST /v1/admin/backup`, `mcp-warden-ctl backup`): it holds its database
//! exclusively, so no other process can read the live file.

use crate::audit;
use crate::store;
use crate::views::AuditVerification;
use rusqlite::{Connection, OptionalExtension};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a backup (or restored database) holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub bytes: u64,
    pub schema: i64,
    pub servers: u64,
    pub ratings: u64,
    /// `None` for a schema 1 file (no chain yet: it is computed when the file is restored).
    pub audit: Option<AuditVerification>,
}

impl Report {
    pub fn summary(&self) -> String {
        let audit = match &self.audit {
            None => "audit log without hash chain (schema 1; computed on restore)".to_string(),
            Some(v) => match &v.head {
                Some(h) => format!("{} audit entries, chain verified, head #{} {}", v.entries, h.id, h.hash),
                None => "empty audit log".to_string(),
            },
        };
        format!("{} bytes, schema {}, {} servers, {} ratings, {audit}", self.bytes, self.schema, self.servers, self.ratings)
    }
}

fn count(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn report(conn: &Connection, bytes: u64) -> Result<Report, String> {
    let schema: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
        .optional()
        .map_err(|e| format!("not an mcp-warden database: {e}"))?;
    let schema = schema.ok_or("not an mcp-warden database: no schema version")?;
    if schema > store::SCHEMA_VERSION {
        return Err(format!("schema version {schema} is newer than this version knows ({})", store::SCHEMA_VERSION));
    }
    let servers = count(conn, "servers").map_err(|e| e.to_string())?;
    let ratings = count(conn, "ratings").map_err(|e| e.to_string())?;
    let audit = if schema >= 2 { Some(audit::verify(conn).map_err(|e| e.to_string())?) } else { None };
    if let Some(b) = audit.as_ref().and_then(|a| a.broken.as_ref()) {
        return Err(format!("its audit chain is broken at entry #{}: {}", b.id, b.reason));
    }
    Ok(Report { bytes, schema, servers, ratings, audit })
}

/// Checks the backup at `path` without changing it.
pub fn inspect(path: &Path) -> Result<Report, String> {
    let fail = |e: String| format!("backup {}: {e}", path.display());
    let bytes = fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if bytes == 0 {
        return Err(fail("the file is empty".into()));
    }
    let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
    conn.pragma_update(None, "query_only", true).map_err(|e| fail(e.to_string()))?;
    store::quick_check(&conn).map_err(|e| fail(e.to_string()))?;
    report(&conn, bytes).map_err(fail)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Installs the backup `from` as the database `db` (the aggregator must be stopped). The backup
/// is checked, copied next to `db`, opened (migrating an older schema), its audit chain verified,
/// then renamed into place. An existing `db` is refused unless `force`; then it and its `-wal` and
/// `-shm` files are kept as `<db>.replaced-<ms>` (a stale WAL must never meet the restored file).
pub fn restore(from: &Path, db: &Path, force: bool) -> Result<(Report, Vec<PathBuf>), String> {
    inspect(from)?;
    let exists = db.exists();
    if exists && !force {
        return Err(format!(
            "{} exists: stop the aggregator and pass --force to replace it (the current files are kept as {}.replaced-<ms>)",
            db.display(),
            db.display()
        ));
    }
    if exists {
        // The running aggregator holds an exclusive lock: reading fails while it runs.
        let probe = Connection::open(db).and_then(|c| c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)));
        if let Err(e) = probe {
            if e.to_string().contains("locked") {
                return Err(format!("{} is in use (is the aggregator running? stop it first): {e}", db.display()));
            }
        }
    }
    let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trust.db".into());
    let tmp = dir.join(format!(".{name}.restore-{}", std::process::id()));
    for p in [tmp.clone(), with_suffix(&tmp, "-wal"), with_suffix(&tmp, "-shm")] {
        let _ = fs::remove_file(p);
    }
    let cleanup = |e: String| {
        let _ = fs::remove_file(&tmp);
        e
    };
    fs::copy(from, &tmp).map_err(|e| cleanup(format!("cannot copy {} to {}: {e}", from.display(), tmp.display())))?;
    let report = {
        let conn = store::open(&tmp).map_err(|e| cleanup(format!("cannot open the copy {}: {e}", tmp.display())))?;
        let bytes = fs::metadata(from).map(|m| m.len()).unwrap_or(0);
        let r = report(&conn, bytes).map_err(|e| cleanup(format!("the restored copy: {e}")))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| cleanup(format!("cannot checkpoint {}: {e}", tmp.display())))?;
        r
        // Closing the last connection folds the WAL into the file and deletes it.
    };
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| cleanup(format!("cannot sync {}: {e}", tmp.display())))?;
    let stamp = now_ms();
    let mut kept = Vec::new();
    for (p, suffix) in [(db.to_path_buf(), ""), (with_suffix(db, "-wal"), "-wal"), (with_suffix(db, "-shm"), "-shm")] {
        if p.exists() {
            let aside = with_suffix(db, &format!(".replaced-{stamp}{suffix}"));
            fs::rename(&p, &aside).map_err(|e| cleanup(format!("cannot move {} aside: {e}", p.display())))?;
            kept.push(aside);
        }
    }
    fs::rename(&tmp, db).map_err(|e| cleanup(format!("cannot move the restored database into place: {e}")))?;
    sync_dir(dir);
    Ok((report, kept))
}
