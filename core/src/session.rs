//! Session affinity and continuity. An MCP session lives on the server that created it: the
//! others answer 404 "session not found". So a session keeps going to the cluster that created
//! it, and when that cluster cannot serve it, the sidecar opens a session of its own on the
//! fallback (replaying the agent's `initialize`) and maps the agent's session id to it.
//!
//! Pins live in shared data in a fixed number of slots addressed by a hash of the session id,
//! so memory is bounded whatever the number of sessions: a new pin simply replaces whatever
//! older pin shared its slot (eviction by overwrite). Sessions created on the primary need no
//! pin: the primary is where routing starts anyway.

/// Default number of pin slots.
pub const DEFAULT_SESSION_SLOTS: u32 = 16_384;

/// FNV-1a, 64 bits: fast, stable across VMs and builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shared-data key of the slot a session id falls in.
pub fn slot_key(session_id: &str, slots: u32) -> String {
    format!("mcp_warden.session.{}", fnv1a(session_id.as_bytes()) % u64::from(slots.max(1)))
}

/// A session pinned to the cluster that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPin {
    pub session: String,
    pub server: String,
    pub cluster: String,
}

impl SessionPin {
    /// `server \n cluster \n session` (none of them may hold a newline).
    pub fn encode(&self) -> Option<Vec<u8>> {
        if [&self.session, &self.server, &self.cluster].iter().any(|s| s.contains('\n') || s.is_empty()) {
            return None;
        }
        Some(format!("{}\n{}\n{}", self.server, self.cluster, self.session).into_bytes())
    }

    pub fn decode(bytes: &[u8]) -> Option<SessionPin> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '\n');
        let (server, cluster, session) = (parts.next()?, parts.next()?, parts.next()?);
        if server.is_empty() || cluster.is_empty() || session.is_empty() {
            return None;
        }
        Some(SessionPin { session: session.into(), server: server.into(), cluster: cluster.into() })
    }

    /// The pinned cluster, if `bytes` hold the pin of exactly this session of this server.
    pub fn lookup(bytes: &[u8], server: &str, session: &str) -> Option<String> {
        SessionPin::decode(bytes).filter(|p| p.server == server && p.session == session).map(|p| p.cluster)
    }
}

/// Most bytes of an agent's `initialize` body kept for replaying on a fallback.
pub const MAX_INIT_BYTES: usize = 16 * 1024;

/// What the sidecar remembers of one agent session (JSON in shared data, next to the replayable
/// `initialize` body under [`init_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    /// The agent's session id.
    pub session: String,
    pub server: String,
    /// The cluster that created the session.
    pub origin: String,
    /// The protocol version the agent negotiated (replayed on fallbacks).
    #[serde(default)]
    pub protocol_version: Option<String>,
    /// Sessions the sidecar opened on other clusters for this agent session: cluster -> id.
    #[serde(default)]
    pub mapped: std::collections::BTreeMap<String, String>,
}

impl SessionRecord {
    /// The record of exactly this session of this server, if `bytes` hold it.
    pub fn lookup(bytes: &[u8], server: &str, session: &str) -> Option<SessionRecord> {
        serde_json::from_slice::<SessionRecord>(bytes).ok().filter(|r| r.server == server && r.session == session)
    }
}

/// The shared-data key of a session's replayable `initialize` body.
pub fn init_key(session_id: &str, slots: u32) -> String {
    format!("{}.init", slot_key(session_id, slots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn pins_round_trip_and_match_only_their_session() {
        let pin = SessionPin { session: "abc".into(), server: "demo".into(), cluster: "outbound|8000||x".into() };
        let bytes = pin.encode().unwrap();
        assert_eq!(SessionPin::decode(&bytes), Some(pin));
        assert_eq!(SessionPin::lookup(&bytes, "demo", "abc").as_deref(), Some("outbound|8000||x"));
        assert_eq!(SessionPin::lookup(&bytes, "demo", "abd"), None);
        assert_eq!(SessionPin::lookup(&bytes, "other", "abc"), None);
        assert_eq!(SessionPin::lookup(b"", "demo", "abc"), None);
        assert_eq!(SessionPin::lookup(b"\xff\n\n", "demo", "abc"), None);
        let bad = SessionPin { session: "a\nb".into(), server: "s".into(), cluster: "c".into() };
        assert_eq!(bad.encode(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn records_match_only_their_session() {
        let mut r = SessionRecord { session: "s1".into(), server: "demo".into(), origin: "p".into(), ..Default::default() };
        r.mapped.insert("f".into(), "f-session".into());
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(SessionRecord::lookup(&bytes, "demo", "s1"), Some(r));
        assert_eq!(SessionRecord::lookup(&bytes, "demo", "s2"), None);
        assert_eq!(SessionRecord::lookup(b"garbage", "demo", "s1"), None);
        assert!(init_key("s1", 8).ends_with(".init"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn slots_are_bounded_and_stable() {
        let keys: std::collections::BTreeSet<String> = (0..10_000).map(|i| slot_key(&format!("s{i}"), 64)).collect();
        assert_eq!(keys.len(), 64);
        assert_eq!(slot_key("x", 64), slot_key("x", 64));
    }
}
