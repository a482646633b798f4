//! The audit log's hash chain. Each entry stores `sha256(previous entry's hash || the entry's
//! canonical bytes)` (the first entry chains from 32 zero bytes), so changing, removing or
//! reordering an entry breaks its link or the next one. The canonical bytes are a fixed,
//! length-prefixed encoding of every field, the id included.
//!
//! What it does not catch alone: removing the newest entries together with the id sequence, or
//! rewriting the whole chain from some entry on. Against both, the head is exported outside the
//! database ([`crate::anchor`]) and verification checks the chain against it.

use crate::views::{AuditVerification, BrokenLink, ChainHead};
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The previous hash of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];
/// Tags the encoding, so a future layout cannot collide with this one.
const DOMAIN: &[u8] = b"mcp-warden audit v1\0";

/// The fields of one entry, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub id: i64,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub server: &'a str,
    pub reason: &'a str,
    pub score: f64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The canonical bytes of an entry: big-endian integers, length-prefixed UTF-8, the score's
/// IEEE-754 bits (SQLite keeps a REAL's 64 bits exactly).
pub fn canonical(e: &Fields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 64 + e.actor.len() + e.action.len() + e.server.len() + e.reason.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&e.id.to_be_bytes());
    out.extend_from_slice(&e.at_ms.to_be_bytes());
    put_str(&mut out, e.actor);
    put_str(&mut out, e.action);
    put_str(&mut out, e.server);
    put_str(&mut out, e.reason);
    out.extend_from_slice(&e.score.to_bits().to_be_bytes());
    out
}

/// The hash of `e` following `prev`.
pub fn link(prev: &[u8; 32], e: &Fields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(e));
    h.finalize().into()
}

pub fn to_hex(h: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The hash the last entry stored (the one a new entry chains from), `GENESIS` if none.
pub fn head(conn: &Connection) -> rusqlite::Result<[u8; 32]> {
    let last: Option<String> = conn
        .prepare_cached("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(last.and_then(|h| from_hex(&h)).unwrap_or(GENESIS))
}

/// Recomputes the chain entry by entry (in id order) and stops at the first broken link; each
/// backend feeds it its rows.
#[derive(Debug, Clone)]
pub struct Verifier {
    prev: [u8; 32],
    expected_id: i64,
    entries: u64,
    head: Option<ChainHead>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Verifier { prev: GENESIS, expected_id: 1, entries: 0, head: None }
    }

    /// The verdict "broken at `id`" with what was verified so far.
    pub fn broken_at(&self, id: i64, reason: String) -> AuditVerification {
        self.broken(id, reason)
    }

    fn broken(&self, id: i64, reason: String) -> AuditVerification {
        AuditVerification { ok: false, entries: self.entries, head: self.head.clone(), broken: Some(BrokenLink { id, reason }) }
    }

    /// The next entry and its stored hash; `Some` (the verdict) at the first broken link.
    pub fn push(&mut self, f: &Fields<'_>, stored: &str) -> Option<AuditVerification> {
        let id = f.id;
        if id != self.expected_id {
            let why = if id > self.expected_id {
                format!("entries #{}..#{} are missing (removed from the log)", self.expected_id, id - 1)
            } else {
                format!("entry #{id} is out of order")
            };
            return Some(self.broken(self.expected_id, why));
        }
        let want = link(&self.prev, f);
        if from_hex(stored) != Some(want) {
            let why = if stored.is_empty() {
                format!("entry #{id} has no hash")
            } else {
                format!("entry #{id} does not match its hash: it was changed, or an entry before it was changed or removed")
            };
            return Some(self.broken(id, why));
        }
        self.prev = want;
        self.entries += 1;
        self.expected_id = id + 1;
        self.head = Some(ChainHead { id, hash: stored.to_string() });
        None
    }

    /// The verdict once every entry was pushed; `issued` is the highest id ever issued (entries
    /// past the last one were removed).
    pub fn finish(self, issued: Option<i64>) -> AuditVerification {
        if let Some(issued) = issued.filter(|s| *s >= self.expected_id) {
            let why = format!("entries #{}..#{issued} are missing (removed from the end of the log)", self.expected_id);
            return self.broken(self.expected_id, why);
        }
        AuditVerification { ok: true, entries: self.entries, head: self.head, broken: None }
    }
}

/// One stored entry with its hash, owned (pages of these are verified away from the database).
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub server: String,
    pub reason: String,
    pub score: f64,
    pub hash: String,
}

impl Row {
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id,
            at_ms: self.at_ms,
            actor: &self.actor,
            action: &self.action,
            server: &self.server,
            reason: &self.reason,
            score: self.score,
        }
    }
}

/// Up to `limit` entries after id `after`, in id order; with the highest id ever issued when
/// this is the last page (read in the same call, so no entry appended in between is missed).
pub fn page(conn: &Connection, after: i64, limit: u32) -> rusqlite::Result<(Vec<Row>, Option<Option<i64>>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![after, limit], |r| {
            Ok(Row {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                server: r.get(4)?,
                reason: r.get(5)?,
                score: r.get(6)?,
                hash: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    let last = if rows.len() < limit as usize {
        Some(conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'audit'", [], |r| r.get(0)).optional()?)
    } else {
        None
    };
    Ok((rows, last))
}

/// Walks the log in id order and recomputes every link; reports the first broken one.
pub fn verify(conn: &Connection) -> rusqlite::Result<AuditVerification> {
    let mut stmt = conn.prepare("SELECT id, at_ms, actor, action, server, reason, score, hash FROM audit ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut v = Verifier::new();
    while let Some(r) = rows.next()? {
        let (id, at_ms): (i64, i64) = (r.get(0)?, r.get(1)?);
        let (actor, action, server, reason): (String, String, String, String) = (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
        let score: f64 = r.get(6)?;
        let stored: String = r.get(7)?;
        let f = Fields { id, at_ms, actor: &actor, action: &action, server: &server, reason: &reason, score };
        if let Some(done) = v.push(&f, &stored) {
            return Ok(done);
        }
    }
    // AUTOINCREMENT remembers the highest id ever issued: entries past the last one were removed.
    let issued: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'audit'", [], |r| r.get(0)).optional()?;
    Ok(v.finish(issued))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f(id: i64, reason: &str) -> Fields<'_> {
        Fields { id, at_ms: 1_700_000_000_000, actor: "ops", action: "quarantine", server: "w", reason, score: 0.25 }
    }

    #[test]
    fn every_field_is_in_the_hash() {
        let base = link(&GENESIS, &f(1, "r"));
        assert_eq!(base, link(&GENESIS, &f(1, "r")));
        assert_ne!(base, link(&GENESIS, &f(2, "r")));
        assert_ne!(base, link(&GENESIS, &f(1, "r ")));
        assert_ne!(base, link(&[1; 32], &f(1, "r")));
        let mut g = f(1, "r");
        g.score = 0.250_000_000_000_001;
        assert_ne!(base, link(&GENESIS, &g));
        // Length prefixes: moving a character between fields changes the bytes.
        let a = Fields { actor: "ab", action: "c", ..f(1, "r") };
        let b = Fields { actor: "a", action: "bc", ..f(1, "r") };
        assert_ne!(canonical(&a), canonical(&b));
    }

    #[test]
    fn hex_round_trips() {
        let h = link(&GENESIS, &f(1, "r"));
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
        // A known vector: sha256 of nothing.
        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(to_hex(&empty), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
