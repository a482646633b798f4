//! The audit chain's head kept outside the database, so that someone who can write the database
//! cannot rewrite or truncate the log unseen: each time the head moves, the periodic round logs
//! it, shows its id in the metrics and appends `{"at_ms","id","hash"}` to the anchor file
//! (`audit_anchor_file`, fsynced; an operator ships it elsewhere, e.g. with the logs). A
//! verification then checks every anchored entry: a rewritten entry re-hashed onwards no longer
//! has its anchored hash, and a truncated log lacks anchored entries.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One line of the anchor file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub at_ms: u64,
    pub id: i64,
    pub hash: String,
}

/// Where heads are exported, and the last one exported.
#[derive(Debug, Default)]
pub struct Anchor {
    path: Option<PathBuf>,
    last: Option<(i64, String)>,
}

impl Anchor {
    pub fn new(path: Option<PathBuf>) -> Anchor {
        let last = path.as_deref().and_then(|p| read(p).ok()).and_then(|m| m.into_iter().next_back());
        Anchor { path, last }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Exports `head` if it moved: `Ok(true)` when it did.
    pub fn record(&mut self, now_ms: u64, head: Option<(i64, String)>) -> Result<bool, String> {
        let Some((id, hash)) = head else { return Ok(false) };
        if self.last.as_ref() == Some(&(id, hash.clone())) {
            return Ok(false);
        }
        tracing::info!(audit_head_id = id, audit_head_hash = %hash, "audit chain head");
        if let Some(path) = &self.path {
            let line = serde_json::to_string(&Line { at_ms: now_ms, id, hash: hash.clone() }).map_err(|e| e.to_string())?;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the audit anchor file {}: {e}", path.display()))?;
            writeln!(f, "{line}").and_then(|()| f.sync_data()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        self.last = Some((id, hash));
        Ok(true)
    }
}

/// The anchored heads in a file: id -> hash (a line that does not parse is an error: the file is
/// evidence too).
pub fn read(path: &Path) -> Result<BTreeMap<i64, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read the audit anchor file {}: {e}", path.display())),
    };
    let mut out = BTreeMap::new();
    for (n, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        out.insert(line.id, line.hash);
    }
    Ok(out)
}

/// Checks a verified entry against the anchors: `Some(reason)` if an anchored hash differs.
pub fn check(anchors: &BTreeMap<i64, String>, id: i64, hash: &str) -> Option<String> {
    match anchors.get(&id) {
        Some(h) if h != hash => Some(format!(
            "entry #{id} is not the entry anchored outside the database (anchored hash {h}): the log was rewritten from \
             this entry or before it on"
        )),
        _ => None,
    }
}

/// After the last entry `last_id`: `Some(reason)` if entries past it were anchored.
pub fn check_end(anchors: &BTreeMap<i64, String>, last_id: i64) -> Option<(i64, String)> {
    let (&top, _) = anchors.iter().next_back()?;
    (top > last_id).then(|| {
        (last_id + 1, format!("entries #{}..#{top} were anchored outside the database but are gone (the log was truncated)", last_id + 1))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn heads_are_appended_once_each_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mcp-warden-anchor-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("anchor.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut a = Anchor::new(Some(path.clone()));
        assert!(a.record(1, Some((1, "aa".into()))).unwrap());
        assert!(!a.record(2, Some((1, "aa".into()))).unwrap());
        assert!(a.record(3, Some((2, "bb".into()))).unwrap());
        let m = read(&path).unwrap();
        assert_eq!(m.len(), 2);
        assert!(check(&m, 2, "bb").is_none());
        assert!(check(&m, 2, "cc").unwrap().contains("rewritten"));
        assert!(check_end(&m, 1).unwrap().1.contains("truncated"));
        assert!(check_end(&m, 2).is_none());
        // A restart picks up where the file ends.
        let mut b = Anchor::new(Some(path.clone()));
        assert!(!b.record(4, Some((2, "bb".into()))).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
