//! Session affinity: an MCP session created on a fallback must keep going to that fallback,
//! because the primary does not know its id (it would answer 404 "session not found").
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
    fn slots_are_bounded_and_stable() {
        let keys: std::collections::BTreeSet<String> = (0..10_000).map(|i| slot_key(&format!("s{i}"), 64)).collect();
        assert_eq!(keys.len(), 64);
        assert_eq!(slot_key("x", 64), slot_key("x", 64));
    }
}
