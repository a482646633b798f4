//! The engine's maintenance operations: verifying the audit chain, online backups, and the
//! storage faults the fail-safe tests inject.

use super::Engine;
use crate::audit;
use crate::error::ApiError;
use crate::views::AuditVerification;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A storage fault injected into the live connection (tests of the fail-safe behaviour: as root,
/// `chmod` does not stop writes, and a full disk is hard to arrange).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The database may not grow by a single page (`PRAGMA max_page_count`): SQLITE_FULL.
    Full,
    /// Writes are refused (`PRAGMA query_only`): like a read-only file.
    ReadOnly,
    /// Back to normal.
    None,
}

impl Engine {
    /// The newest audit entry (id, hash), if any.
    pub fn audit_head(&mut self) -> Result<Option<(i64, String)>, ApiError> {
        Ok(self.db.audit_head()?)
    }

    /// One page of the audit log (a verification hashes it after the engine is released).
    pub fn audit_page(&mut self, after: i64, limit: u32) -> Result<(Vec<audit::Row>, Option<Option<i64>>), ApiError> {
        Ok(self.db.audit_page(after, limit)?)
    }

    /// The whole verification in one call (at start, and by tests).
    pub fn verify_audit(&mut self) -> Result<AuditVerification, ApiError> {
        Ok(self.db.verify_audit()?)
    }

    /// A consistent copy of the whole database (`VACUUM INTO` a file next to it, read back and
    /// deleted). Writes wait meanwhile; the database is small (bounded by its retention settings).
    pub fn backup(&mut self) -> Result<Vec<u8>, ApiError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let Some((conn, path)) = self.db.sqlite() else {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "backups of a PostgreSQL database are made with PostgreSQL's own tools (pg_dump, or the \
                 platform's base backups); this endpoint backs up the SQLite file",
            ));
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trust.db".into());
        let tmp = dir.join(format!(".{name}.backup-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let tmp_str = tmp.to_str().ok_or_else(|| ApiError::internal("the database path is not UTF-8"))?.to_string();
        let _ = std::fs::remove_file(&tmp);
        let made = conn.execute("VACUUM INTO ?1", [&tmp_str]);
        let bytes = made
            .map_err(|e| ApiError::unavailable(format!("the backup failed: cannot write {tmp_str}: {e}")))
            .and_then(|_| {
                std::fs::read(&tmp).map_err(|e| ApiError::unavailable(format!("the backup failed: cannot read {tmp_str}: {e}")))
            });
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    #[doc(hidden)]
    pub fn inject_storage_fault(&mut self, fault: StorageFault) -> Result<(), ApiError> {
        let Some((conn, _)) = self.db.sqlite() else {
            return Err(ApiError::bad_request("storage faults are injected into SQLite only"));
        };
        match fault {
            StorageFault::Full => {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                conn.pragma_update(None, "max_page_count", pages)?;
            }
            StorageFault::ReadOnly => conn.pragma_update(None, "query_only", true)?,
            StorageFault::None => {
                conn.pragma_update(None, "query_only", false)?;
                conn.pragma_update(None, "max_page_count", 4_294_967_294i64)?;
            }
        }
        Ok(())
    }
}
