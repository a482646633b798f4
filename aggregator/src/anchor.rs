//! The audit chain's head kept outside the database, so that someone who can write the database
//! cannot rewrite or truncate the log unseen: each time the head moves, the periodic round logs
//! it, shows its id in the metrics and appends `{"at_ms","id","hash"}` to the anchor file
//! (`audit_anchor_file`, fsynced; an operator ships it elsewhere, e.g. with the logs). A
//! verification then checks every anchored entry: a rewritten entry re-hashed onwards no longer
//! has its anchored hash, and a truncated log lacks anchored entries.
//!
//! With `audit_anchor_key_file`, each line (and the log line) also carries an HMAC-SHA256 of the
//! head under a key the aggregator reads from a file kept apart from the database: whoever can
//! write the database and the anchor file but cannot read the key can neither add a line for a
//! rewritten head nor change one, and a verification refuses an anchor file with a line the key
//! did not sign.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One line of the anchor file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub at_ms: u64,
    pub id: i64,
    pub hash: String,
    /// Hex HMAC-SHA256 of the line's fields under the anchor key ([`mac`]), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The shortest key accepted (bytes): HMAC-SHA256's own output size.
pub const MIN_KEY_BYTES: usize = 32;
/// Tags what is signed, so a MAC of another kind of message cannot pass for one of a head.
const DOMAIN: &[u8] = b"mcp-warden audit anchor v1\0";

/// A secret key for the anchors: the file's bytes, one trailing newline aside (so
/// `head -c 48 /dev/urandom | base64 > key` works as is); at least [`MIN_KEY_BYTES`].
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Reads the anchor key file.
pub fn load_key(path: &Path) -> Result<Key, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() < MIN_KEY_BYTES {
        return Err(format!(
            "{} holds {} bytes; an anchor key needs at least {MIN_KEY_BYTES} (e.g. `head -c 48 /dev/urandom | base64 > FILE`)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(Key(bytes))
}

/// `None` only if HMAC refused the key, which it does for no length.
fn hmac(key: &Key, at_ms: u64, id: i64, hash: &str) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).ok()?;
    m.update(DOMAIN);
    m.update(&at_ms.to_be_bytes());
    m.update(&id.to_be_bytes());
    m.update(&u64::try_from(hash.len()).unwrap_or(u64::MAX).to_be_bytes());
    m.update(hash.as_bytes());
    Some(m)
}

/// The hex MAC of a head.
pub fn mac(key: &Key, at_ms: u64, id: i64, hash: &str) -> Result<String, String> {
    let tag = hmac(key, at_ms, id, hash).ok_or("the anchor key was refused")?.finalize().into_bytes();
    Ok(tag.iter().map(|b| format!("{b:02x}")).collect())
}

/// Does `line` carry a valid MAC under `key`? (Compared in constant time.)
fn signed(key: &Key, line: &Line) -> bool {
    let Some(hex) = line.mac.as_deref() else { return false };
    if hex.len() != 64 || !hex.is_ascii() {
        return false;
    }
    let tag: Option<Vec<u8>> = (0..32).map(|i| hex.get(i * 2..i * 2 + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
    tag.is_some_and(|t| hmac(key, line.at_ms, line.id, &line.hash).is_some_and(|m| m.verify_slice(&t).is_ok()))
}

/// Where heads are exported, the key that signs them, and the last one exported.
#[derive(Debug, Default)]
pub struct Anchor {
    path: Option<PathBuf>,
    key: Option<Key>,
    last: Option<(i64, String)>,
}

impl Anchor {
    pub fn new(path: Option<PathBuf>, key: Option<Key>) -> Anchor {
        let last = path
            .as_deref()
            .and_then(|p| read(p, key.as_ref()).ok())
            .and_then(|a| a.heads.into_iter().next_back());
        Anchor { path, key, last }
    }

    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
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
        let mac = self.key.as_ref().map(|k| mac(k, now_ms, id, &hash)).transpose()?;
        match &mac {
            Some(m) => tracing::info!(audit_head_id = id, audit_head_hash = %hash, audit_head_at_ms = now_ms, audit_head_mac = %m, "audit chain head"),
            None => tracing::info!(audit_head_id = id, audit_head_hash = %hash, "audit chain head"),
        }
        if let Some(path) = &self.path {
            let line = serde_json::to_string(&Line { at_ms: now_ms, id, hash: hash.clone(), mac }).map_err(|e| e.to_string())?;
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

/// What an anchor file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Anchors {
    /// id -> anchored hash.
    pub heads: BTreeMap<i64, String>,
    /// With a key: the first line it did not sign, (its entry id, why).
    pub forged: Option<(i64, String)>,
}

/// The anchored heads in a file (a line that does not parse is an error: the file is evidence
/// too). With `key`, every line must carry its MAC; lines after the first that does not are
/// ignored (they prove nothing).
pub fn read(path: &Path, key: Option<&Key>) -> Result<Anchors, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Anchors::default()),
        Err(e) => return Err(format!("cannot read the audit anchor file {}: {e}", path.display())),
    };
    let mut out = Anchors::default();
    for (n, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        if let Some(k) = key {
            if !signed(k, &line) {
                let why = if line.mac.is_none() { "carries no MAC" } else { "carries a MAC the anchor key did not make" };
                out.forged = Some((
                    line.id,
                    format!(
                        "line {} of the audit anchor file {} (entry #{}) {why}: the anchor file was edited, or written \
                         with another key",
                        n + 1,
                        path.display(),
                        line.id
                    ),
                ));
                break;
            }
        }
        out.heads.insert(line.id, line.hash);
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
        let mut a = Anchor::new(Some(path.clone()), None);
        assert!(a.record(1, Some((1, "aa".into()))).unwrap());
        assert!(!a.record(2, Some((1, "aa".into()))).unwrap());
        assert!(a.record(3, Some((2, "bb".into()))).unwrap());
        let m = read(&path, None).unwrap().heads;
        assert_eq!(m.len(), 2);
        assert!(check(&m, 2, "bb").is_none());
        assert!(check(&m, 2, "cc").unwrap().contains("rewritten"));
        assert!(check_end(&m, 1).unwrap().1.contains("truncated"));
        assert!(check_end(&m, 2).is_none());
        // A restart picks up where the file ends.
        let mut b = Anchor::new(Some(path.clone()), None);
        assert!(!b.record(4, Some((2, "bb".into()))).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn signed_lines_verify_and_an_edited_or_unsigned_line_is_caught() {
        let dir = std::env::temp_dir().join(format!("mcp-warden-anchor-signed-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (path, key_path) = (dir.join("anchor.jsonl"), dir.join("anchor.key"));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&key_path, "short\n").unwrap();
        assert!(load_key(&key_path).unwrap_err().contains("at least 32"));
        std::fs::write(&key_path, format!("{}\n", "k".repeat(40))).unwrap();
        let key = load_key(&key_path).unwrap();
        let mut a = Anchor::new(Some(path.clone()), Some(key.clone()));
        assert!(a.record(1, Some((1, "aa".into()))).unwrap());
        assert!(a.record(2, Some((2, "bb".into()))).unwrap());
        let read_back = read(&path, Some(&key)).unwrap();
        assert_eq!((read_back.heads.len(), read_back.forged), (2, None));
        // Another key's lines are not ours.
        let other = Key(b"another key of at least thirty-two bytes".to_vec());
        assert!(read(&path, Some(&other)).unwrap().forged.unwrap().1.contains("did not make"));
        // A line rewritten for a re-hashed head (keeping the old MAC), or added without a MAC.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"bb\"", "\"cc\"")).unwrap();
        let forged = read(&path, Some(&key)).unwrap();
        assert_eq!(forged.forged.as_ref().map(|f| f.0), Some(2));
        assert_eq!(forged.heads.len(), 1, "lines from the forged one on prove nothing");
        std::fs::write(&path, format!("{text}{{\"at_ms\":3,\"id\":3,\"hash\":\"dd\"}}\n")).unwrap();
        assert!(read(&path, Some(&key)).unwrap().forged.unwrap().1.contains("no MAC"));
        assert_eq!(mac(&key, 1, 1, "aa").unwrap(), mac(&key, 1, 1, "aa").unwrap());
        assert_ne!(mac(&key, 1, 1, "aa").unwrap(), mac(&key, 2, 1, "aa").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
