//! Session affinity and continuity. An MCP session lives on the server that created it: the
//! others answer 404 "session not found". So a session keeps going to the cluster that created
//! it, and when that cluster cannot serve it, the sidecar opens a session of its own on the
//! fallback (replaying the agent's `initialize`) and maps the agent's session id to it.
//!
//! Records live in shared data, which cannot delete keys, so the table has a fixed shape: a
//! session id hashes to one of `max_sessions / WAYS` buckets, and a bucket (one key) holds up to
//! [`WAYS`] records. A new session evicts the least recently used record of a full bucket, never
//! a random neighbour; with the default capacity 100,000 live sessions fit. A request reads one
//! bucket; writes happen when a session starts, is mapped or ends, and at most once per
//! [`TOUCH_INTERVAL_S`] per session to refresh its last use. The `initialize` to replay is kept
//! under its own key per (bucket, way), tagged with its session, so a request never reads it.

use crate::breaker::store::MAX_CAS_ATTEMPTS;
use crate::breaker::store::CREATE_ONLY;
use crate::breaker::{SharedStore, StoreError};
use std::collections::BTreeMap;

/// Records per bucket.
pub const WAYS: usize = 16;
/// Default capacity (records in all buckets): 16,384 buckets of 16.
pub const DEFAULT_MAX_SESSIONS: u32 = 262_144;
/// Smallest and largest `failover.max_sessions`.
pub const MIN_MAX_SESSIONS: u32 = 1_024;
pub const MAX_MAX_SESSIONS: u32 = 4_194_304;
/// A record's last use is rewritten when it is at least this old (seconds).
pub const TOUCH_INTERVAL_S: u64 = 60;
/// Most bytes of an agent's `initialize` body kept for replaying on a fallback.
pub const MAX_INIT_BYTES: usize = 16 * 1024;
/// Longest session id recorded (agents' and servers'); longer ones pass through unrecorded.
pub const MAX_ID_BYTES: usize = 256;
/// Most sessions the sidecar opens elsewhere for one agent session.
pub const MAX_MAPPED: usize = 16;

/// Marks the bucket format; anything else (an older filter's value) reads as an empty bucket.
const BUCKET_MAGIC: &[u8] = b"s1\n";

/// FNV-1a, 64 bits, then a final mix so that every bit of the bucket index depends on the id.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Session ids, server and cluster names are stored as space-separated tokens: visible ASCII only.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A session id the table can record: visible ASCII (as MCP requires), at most [`MAX_ID_BYTES`].
pub fn is_recordable_id(s: &str) -> bool {
    s.len() <= MAX_ID_BYTES && is_token(s)
}

/// What the sidecar remembers of one agent session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    /// The agent's session id.
    pub session: String,
    pub server: String,
    /// The cluster that created the session.
    pub origin: String,
    /// Sessions the sidecar opened on other clusters for this agent session: cluster -> id.
    pub mapped: BTreeMap<String, String>,
    /// Last use, seconds (refreshed at most every [`TOUCH_INTERVAL_S`]).
    pub last_use_s: u64,
    /// The record's place in its bucket (names the key of its `initialize`).
    pub way: u8,
}

impl SessionRecord {
    fn is(&self, server: &str, session: &str) -> bool {
        self.session == session && self.server == server
    }

    /// `way last_use session server origin [cluster id]*`
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut push = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(b' ');
        };
        push(&self.way.to_string());
        push(&self.last_use_s.to_string());
        push(&self.session);
        push(&self.server);
        push(&self.origin);
        for (cluster, id) in &self.mapped {
            push(cluster);
            push(id);
        }
        out.pop();
        out.push(b'\n');
    }

    fn decode(line: &[u8]) -> Option<SessionRecord> {
        let text = std::str::from_utf8(line).ok()?;
        let mut tokens = text.split(' ');
        let way: u8 = tokens.next()?.parse().ok().filter(|w| usize::from(*w) < WAYS)?;
        let last_use_s = tokens.next()?.parse().ok()?;
        let (session, server, origin) = (tokens.next()?, tokens.next()?, tokens.next()?);
        let mut mapped = BTreeMap::new();
        while let Some(cluster) = tokens.next() {
            mapped.insert(cluster.to_string(), tokens.next()?.to_string());
        }
        let record = SessionRecord {
            session: session.into(),
            server: server.into(),
            origin: origin.into(),
            mapped,
            last_use_s,
            way,
        };
        record.is_valid().then_some(record)
    }

    fn is_valid(&self) -> bool {
        is_recordable_id(&self.session)
            && is_token(&self.server)
            && is_token(&self.origin)
            && self.mapped.len() <= MAX_MAPPED
            && self.mapped.iter().all(|(c, id)| is_token(c) && is_recordable_id(id))
    }
}

/// The records of one bucket, in the byte form kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bucket {
    pub records: Vec<SessionRecord>,
}

impl Bucket {
    /// Reads a bucket; unreadable lines (and values of another format) are dropped.
    pub fn decode(bytes: &[u8]) -> Bucket {
        let Some(body) = bytes.strip_prefix(BUCKET_MAGIC) else { return Bucket::default() };
        let mut records: Vec<SessionRecord> = Vec::new();
        for line in body.split(|b| *b == b'\n') {
            if let Some(r) = SessionRecord::decode(line) {
                if records.len() < WAYS && !records.iter().any(|o| o.way == r.way) {
                    records.push(r);
                }
            }
        }
        Bucket { records }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = BUCKET_MAGIC.to_vec();
        for r in &self.records {
            r.encode_into(&mut out);
        }
        out
    }

    /// The record of `session` of `server` in the bucket's bytes, decoding no other line.
    pub fn find(bytes: &[u8], server: &str, session: &str) -> Option<SessionRecord> {
        let body = bytes.strip_prefix(BUCKET_MAGIC)?;
        body.split(|b| *b == b'\n')
            .filter(|line| line_session(line) == Some(session.as_bytes()))
            .filter_map(SessionRecord::decode)
            .find(|r| r.is(server, session))
    }

    fn get_mut(&mut self, server: &str, session: &str) -> Option<&mut SessionRecord> {
        self.records.iter_mut().find(|r| r.is(server, session))
    }

    /// Puts `record` in the bucket: in place of the same session's, else in a free way, else in
    /// place of the least recently used record. Returns the way and whether a record was evicted.
    pub fn insert(&mut self, mut record: SessionRecord) -> (u8, bool) {
        if let Some(i) = self.records.iter().position(|r| r.is(&record.server, &record.session)) {
            record.way = self.records.get(i).map_or(0, |r| r.way);
            let way = record.way;
            if let Some(slot) = self.records.get_mut(i) {
                *slot = record;
            }
            return (way, false);
        }
        if let Some(way) = (0..WAYS as u8).find(|w| !self.records.iter().any(|r| r.way == *w)) {
            record.way = way;
            self.records.push(record);
            return (way, false);
        }
        let oldest = self.records.iter().enumerate().min_by_key(|(_, r)| r.last_use_s).map(|(i, _)| i);
        match oldest.and_then(|i| self.records.get_mut(i)) {
            Some(slot) => {
                record.way = slot.way;
                *slot = record;
                (slot.way, true)
            }
            None => (0, false),
        }
    }

    /// Removes the record of `session`; its way, if it was there.
    pub fn remove(&mut self, server: &str, session: &str) -> Option<u8> {
        let i = self.records.iter().position(|r| r.is(server, session))?;
        Some(self.records.remove(i).way)
    }
}

/// The session id of a record line (its third token), without decoding the rest.
fn line_session(line: &[u8]) -> Option<&[u8]> {
    line.split(|b| *b == b' ').nth(2)
}

/// Whether a record's last use should be rewritten.
pub fn needs_touch(record: &SessionRecord, now_s: u64) -> bool {
    now_s >= record.last_use_s.saturating_add(TOUCH_INTERVAL_S)
}

/// An `initialize` body as kept: `session \n body`.
fn encode_init(session: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(session.len() + 1 + body.len());
    out.extend_from_slice(session.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// The body of `session`'s kept `initialize`, if `bytes` hold it.
fn decode_init<'a>(bytes: &'a [u8], session: &str) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(session.as_bytes())?.strip_prefix(b"\n")?;
    (!rest.is_empty()).then_some(rest)
}

/// What [`SessionTable::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Recorded; `evicted`: the least recently used record of a full bucket made room.
    Recorded { evicted: bool },
    /// Not recorded: an id or name the table cannot hold (see [`is_recordable_id`]).
    Unrecordable,
}

/// The session table over any shared store (Envoy's shared data in the filter).
pub struct SessionTable<'a, S: SharedStore> {
    store: &'a S,
    buckets: u32,
}

impl<'a, S: SharedStore> SessionTable<'a, S> {
    /// A table of at least `max_sessions` records.
    pub fn new(store: &'a S, max_sessions: u32) -> Self {
        SessionTable { store, buckets: buckets_for(max_sessions) }
    }

    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// The key of the bucket `session` falls in.
    pub fn bucket_key(&self, session: &str) -> String {
        format!("mcp_warden.session.{}", self.bucket_of(session))
    }

    fn bucket_of(&self, session: &str) -> u64 {
        hash(session.as_bytes()) % u64::from(self.buckets.max(1))
    }

    /// The key of the `initialize` kept for the record in `way` of `session`'s bucket.
    pub fn init_key(&self, session: &str, way: u8) -> String {
        format!("mcp_warden.session.{}.init.{way}", self.bucket_of(session))
    }

    /// The record of `session` of `server`: one read. A record last used [`TOUCH_INTERVAL_S`] or
    /// more ago is rewritten with `now_s` (one attempt; a lost race means someone else wrote).
    pub fn lookup(&self, server: &str, session: &str, now_s: u64) -> Option<SessionRecord> {
        let key = self.bucket_key(session);
        let (bytes, cas) = self.store.get(&key).ok()?;
        let bytes = bytes?;
        let mut record = Bucket::find(&bytes, server, session)?;
        if needs_touch(&record, now_s) {
            let mut bucket = Bucket::decode(&bytes);
            if let Some(r) = bucket.get_mut(server, session) {
                r.last_use_s = now_s;
                let _ = self.store.set(&key, &bucket.encode(), cas);
            }
            record.last_use_s = now_s;
        }
        Some(record)
    }

    /// Records a session `origin` just created, with the `initialize` that created it (not kept
    /// past [`MAX_INIT_BYTES`]: that session can then not be moved).
    pub fn start(&self, server: &str, session: &str, origin: &str, init: &[u8], now_s: u64) -> Result<Started, StoreError> {
        let record = SessionRecord {
            session: session.to_string(),
            server: server.to_string(),
            origin: origin.to_string(),
            mapped: BTreeMap::new(),
            last_use_s: now_s,
            way: 0,
        };
        if !record.is_valid() {
            return Ok(Started::Unrecordable);
        }
        let mut placed = None;
        self.update(session, |bucket| {
            placed = Some(bucket.insert(record.clone()));
            true
        })?;
        let Some((way, evicted)) = placed else { return Err(StoreError::CasMismatch) };
        // Written after the record, so a way is never claimed by two sessions' bodies; the tag
        // tells a body from an evicted session's. Too big: only the tag (frees the old body).
        let body = if init.len() <= MAX_INIT_BYTES { init } else { &[][..] };
        self.store.set(&self.init_key(session, way), &encode_init(session, body), None)?;
        Ok(Started::Recorded { evicted })
    }

    /// Records the session the sidecar opened on `cluster` for `session`. False when the record
    /// is gone (evicted or ended) or the id cannot be recorded.
    pub fn map(&self, server: &str, session: &str, cluster: &str, theirs: &str) -> Result<bool, StoreError> {
        if !is_token(cluster) || !is_recordable_id(theirs) {
            return Ok(false);
        }
        let mut mapped = false;
        self.update(session, |bucket| {
            mapped = false;
            let Some(r) = bucket.get_mut(server, session) else { return false };
            if r.mapped.len() >= MAX_MAPPED && !r.mapped.contains_key(cluster) {
                return false;
            }
            r.mapped.insert(cluster.to_string(), theirs.to_string());
            mapped = true;
            true
        })?;
        Ok(mapped)
    }

    /// Forgets a session (it was deleted) and its `initialize`.
    pub fn forget(&self, server: &str, session: &str) -> Result<bool, StoreError> {
        let mut way = None;
        self.update(session, |bucket| {
            way = bucket.remove(server, session);
            way.is_some()
        })?;
        let Some(way) = way else { return Ok(false) };
        let key = self.init_key(session, way);
        // Only if no newer session took the way meanwhile.
        if let Ok((Some(bytes), cas)) = self.store.get(&key) {
            if decode_init(&bytes, session).is_some() || bytes == encode_init(session, b"") {
                self.store.set(&key, b"", cas)?;
            }
        }
        Ok(true)
    }

    /// The `initialize` that started `record`'s session, to replay on a fallback.
    pub fn init_body(&self, record: &SessionRecord) -> Option<Vec<u8>> {
        let (bytes, _) = self.store.get(&self.init_key(&record.session, record.way)).ok()?;
        decode_init(&bytes?, &record.session).map(<[u8]>::to_vec)
    }

    /// Read-modify-write of `session`'s bucket, retried on lost races; `change` says whether it
    /// changed anything (nothing is written otherwise).
    fn update(&self, session: &str, mut change: impl FnMut(&mut Bucket) -> bool) -> Result<(), StoreError> {
        let key = self.bucket_key(session);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bytes, cas) = self.store.get(&key)?;
            let mut bucket = bytes.as_deref().map(Bucket::decode).unwrap_or_default();
            if !change(&mut bucket) {
                return Ok(());
            }
            match self.store.set(&key, &bucket.encode(), cas.or(Some(CREATE_ONLY))) {
                Ok(()) => return Ok(()),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

/// Buckets for a capacity of `max_sessions` records (rounded up to whole buckets).
pub fn buckets_for(max_sessions: u32) -> u32 {
    max_sessions.div_ceil(WAYS as u32).max(1)
}

#[cfg(test)]
mod tests;
